//! Benchmarks: ours against the peer pipeline, on the same input, in the same run,
//! reported as ratios (absolute times on shared machines are noise).
//!
//! Each case runs both sides `ROUNDS` times alternately and compares medians; peak memory
//! comes from `/usr/bin/time -v`.

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

/// Run a command under `/usr/bin/time -v`; wall time and peak RSS.
fn measure(cmd: &[&str]) -> Result<Measured> {
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

pub fn run(args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let nf = fs::canonicalize(nanoforge_bin()?)?;
    let dir = PathBuf::from("bench-out");
    fs::create_dir_all(&dir)?;
    let rows = vec![raw_to_vhdx(&dir, &nf, quick)?];
    println!(
        "{:<55} {:>9} {:>9} {:>7} {:>11} {:>11} {:>7} {:>10}",
        "case", "ours s", "peer s", "time×", "ours bytes", "peer bytes", "size×", "ours RSS"
    );
    let mut json = Vec::new();
    for r in &rows {
        let tr = r.ours / r.peer;
        let sr = r.ours_size as f64 / r.peer_size.max(1) as f64;
        println!(
            "{:<55} {:>9.3} {:>9.3} {:>7.2} {:>11} {:>11} {:>7.3} {:>7} MiB",
            r.name,
            r.ours,
            r.peer,
            tr,
            r.ours_size,
            r.peer_size,
            sr,
            r.ours_rss / 1024
        );
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
