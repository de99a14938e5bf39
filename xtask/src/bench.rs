//! Benchmarks: ours against the peer pipeline, on the same input, in the same run,
//! reported as ratios (absolute times on shared machines are noise).
//!
//! Each case runs both sides `ROUNDS` times alternately and compares medians; every timed
//! run starts after a `sync`; peak memory comes from `/usr/bin/time -v`.

use anyhow::{bail, Context, Result};
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const ROUNDS: usize = 3;

struct Measured {
    secs: f64,
    peak_rss_kib: u64,
}

/// Write back every dirty page before a timed run, so neither side pays for the other's
/// (or its own previous round's) page-cache writeback, which otherwise moves the peer's
/// times by 20 % and more between runs.
fn settle() -> Result<()> {
    let st = Command::new("sync").status().context("cannot run sync")?;
    if !st.success() {
        bail!("sync failed");
    }
    Ok(())
}

/// Run a command under `/usr/bin/time -v`; wall time and peak RSS. The page cache is
/// settled first (see [`settle`]).
fn measure(cmd: &[&str]) -> Result<Measured> {
    settle()?;
    let start = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .args(cmd)
        .output()
        .with_context(|| {
            format!("cannot run /usr/bin/time -v {cmd:?} (install with `cargo xtask deps`)")
        })?;
    let secs = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let peak_rss_kib = err
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Ok(Measured { secs, peak_rss_kib })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("times are finite"));
    v[v.len() / 2]
}

fn allocated(p: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(fs::metadata(p)?.blocks() * 512)
}

fn nanoforge_bin() -> Result<PathBuf> {
    let st = Command::new("cargo")
        .args(["build", "--release", "--quiet", "-p", "nanoforge"])
        .status()?;
    if !st.success() {
        bail!("release build failed");
    }
    Ok(PathBuf::from("target/release/nanoforge"))
}

/// A sparse raw image of `size` bytes holding `data` bytes of incompressible data in
/// 1 MiB runs at scattered, deterministic positions.
fn scattered_raw(path: &Path, size: u64, data: u64) -> Result<()> {
    let mut f = fs::File::create(path)?;
    f.set_len(size)?;
    let chunk = 1u64 << 20;
    let slots = size / chunk;
    let runs = data / chunk;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; chunk as usize];
    // Every (slots/runs)-th slot, jittered: data spread over the whole disk.
    let stride = slots / runs;
    for i in 0..runs {
        for w in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        let slot = i * stride + (x % stride);
        f.seek(SeekFrom::Start(slot * chunk))?;
        f.write_all(&buf)?;
    }
    f.sync_all()?;
    Ok(())
}

/// Rows printed as they are measured, so a later failure loses none.
struct Rows(Vec<Row>);

impl Rows {
    fn push(&mut self, r: Row) {
        if self.0.is_empty() {
            println!(
                "{:<62} {:>9} {:>9} {:>7} {:>11} {:>11} {:>7} {:>10}",
                "case",
                "ours s",
                "peer s",
                "time×",
                "ours bytes",
                "peer bytes",
                "size×",
                "ours RSS"
            );
        }
        let tr = r.ours / r.peer;
        let sr = r.ours_size as f64 / r.peer_size.max(1) as f64;
        println!(
            "{:<62} {:>9.3} {:>9.3} {:>7.2} {:>11} {:>11} {:>7.3} {:>7} MiB",
            r.name,
            r.ours,
            r.peer,
            tr,
            r.ours_size,
            r.peer_size,
            sr,
            r.ours_rss / 1024
        );
        self.0.push(r);
    }
}

struct Row {
    name: String,
    ours: f64,
    peer: f64,
    ours_size: u64,
    peer_size: u64,
    ours_rss: u64,
}

fn raw_to_vhdx(dir: &Path, nf: &Path, quick: bool) -> Result<Row> {
    let (size, data) = if quick {
        (1u64 << 30, 256u64 << 20)
    } else {
        (4u64 << 30, 1u64 << 30)
    };
    let input = dir.join("scattered.img");
    scattered_raw(&input, size, data)?;
    let ours_out = dir.join("ours.vhdx");
    let peer_out = dir.join("peer.vhdx");
    let (mut ours, mut peer, mut rss) = (Vec::new(), Vec::new(), 0);
    for _ in 0..ROUNDS {
        let _ = fs::remove_file(&ours_out);
        let _ = fs::remove_file(&peer_out);
        let m = measure(&[
            nf.to_str().unwrap(),
            "convert",
            "-q",
            input.to_str().unwrap(),
            ours_out.to_str().unwrap(),
        ])?;
        ours.push(m.secs);
        rss = rss.max(m.peak_rss_kib);
        let m = measure(&[
            "qemu-img",
            "convert",
            "-O",
            "vhdx",
            input.to_str().unwrap(),
            peer_out.to_str().unwrap(),
        ])?;
        peer.push(m.secs);
    }
    // Our output must hold the input disk before its time means anything.
    let back = dir.join("ours-back.img");
    let st = Command::new("qemu-img")
        .args(["convert", "-f", "vhdx", "-O", "raw"])
        .arg(&ours_out)
        .arg(&back)
        .status()?;
    if !st.success()
        || !Command::new("cmp")
            .arg("-s")
            .arg(&input)
            .arg(&back)
            .status()?
            .success()
    {
        bail!("our VHDX does not hold the input disk");
    }
    let _ = fs::remove_file(&back);
    Ok(Row {
        name: format!(
            "raw → VHDX, {} GiB disk with {} MiB scattered",
            size >> 30,
            data >> 20
        ),
        ours: median(ours),
        peer: median(peer),
        ours_size: allocated(&ours_out)?,
        peer_size: allocated(&peer_out)?,
        ours_rss: rss,
    })
}

/// Host folders captured into the bench WIMs: (source, path in the image). Together they
/// hold well over 1.5 GB and 40,000 files on a Debian machine with a Rust toolchain; the
/// small set is about half of that.
const BENCH_SOURCES: &[(&str, &str)] = &[
    ("/usr/share", "/share"),
    ("/usr/lib/x86_64-linux-gnu", "/lib"),
];
const SMALL_SOURCES: &[(&str, &str)] = &[("/usr/share", "/share")];

/// Capture `sources` with wimlib (once; kept in bench-out/ for later runs).
/// wimlib capture configuration leaving out names Windows cannot hold (':' separates
/// streams), so the apply benchmark's input is a valid Windows volume for both sides.
/// wimlib's '*' stops at '/', and a pattern naming ':' must be a path, so one pattern per
/// depth.
fn windows_names_only() -> String {
    let mut s = String::from("[ExclusionList]\n");
    for depth in 0..16 {
        s.push_str(&"/*".repeat(depth));
        s.push_str("/*:*\n");
    }
    s
}

fn bench_wim(dir: &Path, name: &str, sources: &[(&str, &str)], extra: &[&str]) -> Result<PathBuf> {
    let wim = dir.join(name);
    if wim.exists() {
        return Ok(wim);
    }
    let list = dir.join(format!("{name}.sources"));
    let text: String = sources.iter().map(|(s, d)| format!("{s} {d}\n")).collect();
    fs::write(&list, text)?;
    let tmp = dir.join(format!("{name}.partial"));
    let config = dir.join("windows-names.txt");
    fs::write(&config, windows_names_only())?;
    eprintln!("making {} with wimlib (once) ...", wim.display());
    let st = Command::new("wimlib-imagex")
        .arg("capture")
        .arg(&list)
        .arg(&tmp)
        .arg("bench")
        .arg("--source-list")
        .arg(format!("--config={}", config.display()))
        .args(extra)
        .stdout(std::process::Stdio::null())
        .status()?;
    if !st.success() {
        bail!("wimlib-imagex capture failed");
    }
    fs::rename(&tmp, &wim)?;
    Ok(wim)
}

/// `nanoforge wim verify` against `wimlib-imagex verify` on the same file.
fn wim_verify(nf: &Path, wim: &Path, label: &str) -> Result<Row> {
    let (mut ours, mut peer, mut rss) = (Vec::new(), Vec::new(), 0);
    let w = wim.to_str().expect("UTF-8 path");
    for _ in 0..ROUNDS {
        let m = measure(&[nf.to_str().unwrap(), "wim", "verify", w])?;
        ours.push(m.secs);
        rss = rss.max(m.peak_rss_kib);
        peer.push(measure(&["wimlib-imagex", "verify", w])?.secs);
    }
    let size = fs::metadata(wim)?.len();
    Ok(Row {
        name: format!("wim verify, {label}"),
        ours: median(ours),
        peer: median(peer),
        ours_size: size,
        peer_size: size,
        ours_rss: rss,
    })
}

/// WIM → bootable-layout VHDX (ours) against mkntfs + wimlib-imagex apply + qemu-img
/// convert (the peer pipeline), same WIM.
fn wim_to_vhdx(dir: &Path, nf: &Path, wim: &Path, label: &str) -> Result<Row> {
    let w = wim.to_str().expect("UTF-8 path");
    let (ours_out, vol, peer_out) = (
        dir.join("ours-apply.vhdx"),
        dir.join("peer.ntfs"),
        dir.join("peer-apply.vhdx"),
    );
    let disk = "8GiB";
    // The peer's volume: the size our Windows partition gets on the same disk.
    let plan = Command::new(nf)
        .args([
            "disk",
            "create",
            "--size",
            disk,
            "--dry-run",
            "--json",
            "-o",
        ])
        .arg(&ours_out)
        .output()?;
    let v: serde_json::Value = serde_json::from_slice(&plan.stdout)?;
    let part = v["layout"]["partitions"][2]["last_lba"]
        .as_u64()
        .unwrap_or(0)
        + 1
        - v["layout"]["partitions"][2]["first_lba"]
            .as_u64()
            .unwrap_or(0);
    let vol_size = part * 512;
    let (mut ours, mut peer, mut rss) = (Vec::new(), Vec::new(), 0);
    for _ in 0..ROUNDS {
        for p in [&ours_out, &vol, &peer_out] {
            let _ = fs::remove_file(p);
        }
        let m = measure(&[
            nf.to_str().unwrap(),
            "disk",
            "create",
            "-q",
            "--size",
            disk,
            "--case-sensitive",
            "--windows-wim",
            &format!("{w}:1"),
            "-o",
            ours_out.to_str().unwrap(),
        ])?;
        ours.push(m.secs);
        rss = rss.max(m.peak_rss_kib);
        settle()?;
        let start = Instant::now();
        fs::File::create(&vol)?.set_len(vol_size)?;
        for cmd in [
            vec!["mkntfs", "-F", "-Q", "-q", vol.to_str().unwrap()],
            vec!["wimlib-imagex", "apply", w, "1", vol.to_str().unwrap()],
            vec![
                "qemu-img",
                "convert",
                "-O",
                "vhdx",
                vol.to_str().unwrap(),
                peer_out.to_str().unwrap(),
            ],
        ] {
            let o = Command::new(cmd[0]).args(&cmd[1..]).output()?;
            if !o.status.success() {
                bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&o.stderr));
            }
        }
        peer.push(start.elapsed().as_secs_f64());
    }
    let r = Row {
        name: format!("WIM → VHDX, {label}"),
        ours: median(ours),
        peer: median(peer),
        ours_size: allocated(&ours_out)?,
        peer_size: allocated(&peer_out)?,
        ours_rss: rss,
    };
    let _ = fs::remove_file(&vol);
    Ok(r)
}

/// Paths (source-relative, for a wimlib exclusion list) of names that collide with an
/// earlier name of the same folder when case is ignored: Windows reaches only one of each.
fn case_collisions(sources: &[(&str, &str)]) -> Vec<String> {
    fn walk(host: &Path, image: &str, out: &mut Vec<String>) {
        let Ok(rd) = fs::read_dir(host) else { return };
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut seen = std::collections::HashSet::new();
        for n in names {
            let p = format!("{image}/{n}");
            if !seen.insert(n.to_lowercase()) {
                out.push(p);
                continue;
            }
            let h = host.join(&n);
            if h.is_dir() && !h.is_symlink() {
                walk(&h, &p, out);
            }
        }
    }
    // wimlib matches a capture config's paths relative to each source's own root.
    let mut out = Vec::new();
    for (src, _) in sources {
        walk(Path::new(src), "", &mut out);
    }
    out
}

/// A container base image WIM holding the demo base image's Windows tree (its hives) and
/// `sources`, with the XML fields a base image needs. Made once with wimlib.
fn base_image_wim(dir: &Path, nf: &Path, demo: &Path, sources: &[(&str, &str)]) -> Result<PathBuf> {
    let wim = dir.join("base-usr-lzx.wim");
    if wim.exists() {
        return Ok(wim);
    }
    let base_dir = dir.join("demo-base-tree");
    let _ = fs::remove_dir_all(&base_dir);
    let st = Command::new("wimlib-imagex")
        .arg("apply")
        .arg(demo.join("BaseImages/NanoServer-demo.wim"))
        .arg("1")
        .arg(&base_dir)
        .stdout(std::process::Stdio::null())
        .status()?;
    if !st.success() {
        bail!("wimlib-imagex apply of the demo base image failed");
    }
    let mut all: Vec<(&str, &str)> = vec![(base_dir.to_str().unwrap(), "/")];
    all.extend_from_slice(sources);
    let list = dir.join("base-usr-lzx.wim.sources");
    fs::write(
        &list,
        all.iter()
            .map(|(s, d)| format!("{s} {d}\n"))
            .collect::<String>(),
    )?;
    let config = dir.join("base-exclusions.txt");
    let mut cfg = windows_names_only();
    for p in case_collisions(sources) {
        cfg.push_str(&p);
        cfg.push('\n');
    }
    fs::write(&config, cfg)?;
    let tmp = dir.join("base-usr-lzx.wim.partial");
    eprintln!("making {} with wimlib (once) ...", wim.display());
    let st = Command::new("wimlib-imagex")
        .arg("capture")
        .arg(&list)
        .arg(&tmp)
        .arg("NanoServer")
        .arg("--source-list")
        .arg(format!("--config={}", config.display()))
        .arg("--compress=lzx")
        .stdout(std::process::Stdio::null())
        .status()?;
    if !st.success() {
        bail!("wimlib-imagex capture of the base image failed");
    }
    let st = Command::new("wimlib-imagex")
        .arg("info")
        .arg(&tmp)
        .arg("1")
        .args([
            "--image-property",
            "WINDOWS/EDITIONID=ServerDatacenterNano",
            "--image-property",
            "WINDOWS/VERSION/MAJOR=10",
            "--image-property",
            "WINDOWS/VERSION/MINOR=0",
            "--image-property",
            "WINDOWS/VERSION/BUILD=14393",
            "--image-property",
            "WINDOWS/VERSION/SPBUILD=0",
        ])
        .stdout(std::process::Stdio::null())
        .status()?;
    if !st.success() {
        bail!("wimlib-imagex info --image-property failed");
    }
    fs::rename(&tmp, &wim)?;
    let _ = fs::remove_dir_all(&base_dir);
    let _ = nf;
    Ok(wim)
}

/// `nanoforge build` of the container-host template on the demo media (optionally with a
/// large base image) against the peer pipeline on the same inputs: mkntfs + wimlib-imagex
/// apply of the OS image, mkntfs + wimlib-imagex apply of the base image (wimlib applies an
/// image only to the root of an NTFS volume without a mount, so it gets a second volume),
/// then qemu-img convert of both volumes to VHDX. The peer does less than we do (no
/// packages, settings, store metadata or boot files).
fn build_case(dir: &Path, nf: &Path, demo: &Path, base: &Path, label: &str) -> Result<Row> {
    let template = fs::canonicalize("templates/container-host.toml")?;
    let out = dir.join("ours-build.vhdx");
    let (vol, vol2, p1, p2) = (
        dir.join("peer-os.ntfs"),
        dir.join("peer-base.ntfs"),
        dir.join("peer-os.vhdx"),
        dir.join("peer-base.vhdx"),
    );
    let size = "16GiB";
    let os_wim = demo.join("NanoServer/NanoServer.wim");
    let (mut ours, mut peer, mut rss) = (Vec::new(), Vec::new(), 0);
    // The peer's volumes: as large as our Windows partition.
    let vol_size = (16u64 << 30) - (300 << 20);
    for _ in 0..ROUNDS {
        for p in [&out, &vol, &vol2, &p1, &p2] {
            let _ = fs::remove_file(p);
        }
        let m = measure(&[
            nf.to_str().unwrap(),
            "build",
            "-q",
            template.to_str().unwrap(),
            "--media",
            demo.to_str().unwrap(),
            "--base-image",
            base.to_str().unwrap(),
            "--size",
            size,
            "--force",
            "-o",
            out.to_str().unwrap(),
        ])?;
        ours.push(m.secs);
        rss = rss.max(m.peak_rss_kib);
        settle()?;
        let start = Instant::now();
        for (v, w, idx, o) in [
            (&vol, &os_wim, "2", &p1),
            (&vol2, &base.to_path_buf(), "1", &p2),
        ] {
            fs::File::create(v)?.set_len(vol_size)?;
            for cmd in [
                vec!["mkntfs", "-F", "-Q", "-q", v.to_str().unwrap()],
                vec![
                    "wimlib-imagex",
                    "apply",
                    w.to_str().unwrap(),
                    idx,
                    v.to_str().unwrap(),
                ],
                vec![
                    "qemu-img",
                    "convert",
                    "-O",
                    "vhdx",
                    v.to_str().unwrap(),
                    o.to_str().unwrap(),
                ],
            ] {
                let r = Command::new(cmd[0]).args(&cmd[1..]).output()?;
                if !r.status.success() {
                    bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&r.stderr));
                }
            }
        }
        peer.push(start.elapsed().as_secs_f64());
    }
    let r = Row {
        name: format!("build container-host, {label}"),
        ours: median(ours),
        peer: median(peer),
        ours_size: allocated(&out)?,
        peer_size: allocated(&p1)? + allocated(&p2)?,
        ours_rss: rss,
    };
    for p in [&vol, &vol2] {
        let _ = fs::remove_file(p);
    }
    Ok(r)
}

fn wim_label(wim: &Path) -> Result<String> {
    let o = Command::new("wimlib-imagex")
        .arg("info")
        .arg(wim)
        .arg("1")
        .output()?;
    let text = String::from_utf8_lossy(&o.stdout);
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let bytes: u64 = get("Total Bytes:").parse().unwrap_or(0);
    Ok(format!(
        "{} files, {} MB uncompressed",
        get("File Count:"),
        bytes / 1_000_000
    ))
}

pub fn run(args: &[String]) -> Result<()> {
    // A typo or --help must not start a long run of every case.
    for a in args {
        if !matches!(a.as_str(), "vhdx" | "wim" | "apply" | "build" | "--quick") {
            bail!("bench: unknown argument '{a}'; use: bench [vhdx|wim|apply|build]... [--quick]");
        }
    }
    let quick = args.iter().any(|a| a == "--quick");
    let only: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    let want = |name: &str| only.is_empty() || only.contains(&name);
    let nf = fs::canonicalize(nanoforge_bin()?)?;
    let dir = PathBuf::from("bench-out");
    fs::create_dir_all(&dir)?;
    let mut rows = Rows(Vec::new());
    if want("vhdx") {
        rows.push(raw_to_vhdx(&dir, &nf, quick)?);
    }
    if want("wim") || want("apply") {
        let sources = if quick { SMALL_SOURCES } else { BENCH_SOURCES };
        let lzx = bench_wim(
            &dir,
            if quick {
                "small-lzx.wim"
            } else {
                "usr-lzx.wim"
            },
            sources,
            &["--compress=lzx"],
        )?;
        let label = wim_label(&lzx)?;
        if want("wim") {
            rows.push(wim_verify(&nf, &lzx, &format!("LZX, {label}"))?);
            let lzms = bench_wim(
                &dir,
                if quick {
                    "small-lzms-solid.wim"
                } else {
                    "usr-lzms-solid.wim"
                },
                sources,
                &["--solid"],
            )?;
            rows.push(wim_verify(&nf, &lzms, &format!("LZMS solid, {label}"))?);
        }
        if want("apply") {
            let small = bench_wim(
                &dir,
                "apply-small-lzx.wim",
                SMALL_SOURCES,
                &["--compress=lzx"],
            )?;
            rows.push(wim_to_vhdx(&dir, &nf, &small, &wim_label(&small)?)?);
            if !quick {
                let large = bench_wim(
                    &dir,
                    "apply-usr-lzx.wim",
                    BENCH_SOURCES,
                    &["--compress=lzx"],
                )?;
                rows.push(wim_to_vhdx(&dir, &nf, &large, &wim_label(&large)?)?);
            }
        }
    }
    if want("build") {
        let demo = dir.join("demo-media");
        if !demo.exists() {
            let st = Command::new(&nf)
                .args(["media", "demo", "-q"])
                .arg(&demo)
                .status()?;
            if !st.success() {
                bail!("nanoforge media demo failed");
            }
        }
        let demo = fs::canonicalize(&demo)?;
        let small = demo.join("BaseImages/NanoServer-demo.wim");
        rows.push(build_case(&dir, &nf, &demo, &small, "demo media")?);
        let sources = if quick { SMALL_SOURCES } else { BENCH_SOURCES };
        let large = base_image_wim(&dir, &nf, &demo, sources)?;
        let label = format!("demo media + base image of {}", wim_label(&large)?);
        rows.push(build_case(&dir, &nf, &demo, &large, &label)?);
    }
    println!(
        "{:<55} {:>9} {:>9} {:>7} {:>11} {:>11} {:>7} {:>10}",
        "case", "ours s", "peer s", "time×", "ours bytes", "peer bytes", "size×", "ours RSS"
    );
    let mut json = Vec::new();
    for r in &rows.0 {
        let tr = r.ours / r.peer;
        let sr = r.ours_size as f64 / r.peer_size.max(1) as f64;
        json.push(format!(
            "{{\"case\":{:?},\"ours_s\":{:.4},\"peer_s\":{:.4},\"time_ratio\":{:.3},\"ours_bytes\":{},\"peer_bytes\":{},\"size_ratio\":{:.4},\"ours_peak_rss_kib\":{}}}",
            r.name, r.ours, r.peer, tr, r.ours_size, r.peer_size, sr, r.ours_rss
        ));
    }
    fs::write(
        dir.join("results.json"),
        format!("[{}]\n", json.join(",\n")),
    )?;
    println!("(medians of {ROUNDS} alternating runs; ratios are ours / peer; results in bench-out/results.json)");
    Ok(())
}
