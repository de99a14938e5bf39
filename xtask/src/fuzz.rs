//! `cargo xtask fuzz`: a time-boxed mutation loop over the readers, through the binary.
//!
//! Seeds are WIMs made by wimlib (every compression, solid) and disk images made by us;
//! each round flips, overwrites or truncates bytes of one seed (a fixed-seed generator, so
//! a run can be repeated) and runs the commands that read it. A panic (exit 101 or
//! "panicked" on stderr), a signal or a hang past the per-run limit is a finding: the input
//! is saved under bench-out/fuzz/findings/ and the task fails.

use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest one reader may take on one input before it counts as a hang.
const PER_RUN_LIMIT: &str = "20";

/// A seed file and the command lines (before and after the file argument) that read it.
type Seed = (PathBuf, Vec<Vec<&'static str>>);

fn seeds(dir: &Path, nf: &Path) -> Result<Vec<Seed>> {
    let src = dir.join("src");
    fs::create_dir_all(src.join("sub/deeper"))?;
    for i in 0..40u32 {
        let data: Vec<u8> = (0..(i * 997) as usize)
            .map(|k| ((k as u32 * 31 + i) % 251) as u8)
            .collect();
        fs::write(
            src.join(if i % 3 == 0 { "sub" } else { "sub/deeper" })
                .join(format!("f{i}.bin")),
            data,
        )?;
        fs::write(
            src.join(format!("text{i}.txt")),
            format!("line {i}\n").repeat(i as usize * 20),
        )?;
    }
    let wim_cmds = vec![
        vec!["wim", "verify"],
        vec!["wim", "dir", "--detailed"],
        vec!["wim", "info", "--json"],
    ];
    let mut out = Vec::new();
    for (name, extra) in [
        ("none.wim", vec!["--compress=none"]),
        ("xpress.wim", vec!["--compress=xpress"]),
        ("lzx.wim", vec!["--compress=lzx"]),
        ("lzms.wim", vec!["--compress=lzms"]),
        ("solid.wim", vec!["--solid"]),
    ] {
        let p = dir.join(name);
        if !p.exists() {
            let st = Command::new("wimlib-imagex")
                .arg("capture")
                .arg(&src)
                .arg(&p)
                .arg("seed")
                .args(&extra)
                .stdout(Stdio::null())
                .status()
                .context("wimlib-imagex (run `cargo xtask deps`)")?;
            if !st.success() {
                bail!("wimlib-imagex capture failed");
            }
        }
        out.push((p, wim_cmds.clone()));
    }
    for name in ["disk.vhdx", "disk.vhd"] {
        let p = dir.join(name);
        if !p.exists() {
            let st = Command::new(nf)
                .args([
                    "disk",
                    "create",
                    "-q",
                    "--size",
                    "320MiB",
                    "--seed",
                    "fuzz",
                    "--esp-dir",
                ])
                .arg(src.join("sub"))
                .arg("-o")
                .arg(&p)
                .status()?;
            if !st.success() {
                bail!("making {name} failed");
            }
        }
        out.push((p, vec![vec!["inspect"]]));
    }
    Ok(out)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Mutate a copy of `data`: the first 64 KiB (headers, tables) are hit more often.
fn mutate(data: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = data.to_vec();
    let hot = (v.len() as u64).min(64 << 10);
    match rng.below(4) {
        0 => {
            for _ in 0..1 + rng.below(8) {
                let at = if rng.below(2) == 0 {
                    rng.below(hot)
                } else {
                    rng.below(v.len() as u64)
                } as usize;
                v[at] ^= 1 << rng.below(8);
            }
        }
        1 => {
            let at = rng.below(hot) as usize;
            let val = [0u8, 0xFF, 0x7F, 0x80][rng.below(4) as usize];
            for b in v.iter_mut().skip(at).take(1 + rng.below(16) as usize) {
                *b = val;
            }
        }
        2 => v.truncate(rng.below(v.len() as u64) as usize),
        _ => {
            let at = rng.below(hot.saturating_sub(8)) as usize;
            let big = u64::MAX - rng.below(1 << 20);
            let n = (v.len() - at).min(8);
            v[at..at + n].copy_from_slice(&big.to_le_bytes()[..n]);
        }
    }
    v
}

pub fn run(args: &[String]) -> Result<()> {
    let seconds: u64 = match args.iter().position(|a| a == "--seconds") {
        Some(i) => args
            .get(i + 1)
            .context("--seconds takes a number")?
            .parse()?,
        None => 60,
    };
    let st = Command::new("cargo")
        .args(["build", "--release", "--quiet", "-p", "nanoforge"])
        .status()?;
    if !st.success() {
        bail!("release build failed");
    }
    let nf = fs::canonicalize("target/release/nanoforge")?;
    let dir = PathBuf::from("bench-out/fuzz");
    fs::create_dir_all(dir.join("findings"))?;
    let seeds = seeds(&dir, &nf)?;
    let case = dir.join("case");
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let start = Instant::now();
    let (mut runs, mut findings) = (0u64, 0u64);
    while start.elapsed() < Duration::from_secs(seconds) {
        let (seed, cmds) = &seeds[rng.below(seeds.len() as u64) as usize];
        let data = fs::read(seed)?;
        let input = mutate(&data, &mut rng);
        let ext = seed.extension().and_then(|e| e.to_str()).unwrap_or("bin");
        let path = case.with_extension(ext);
        fs::write(&path, &input)?;
        for cmd in cmds {
            let mut c = Command::new("timeout");
            c.arg(PER_RUN_LIMIT)
                .arg(&nf)
                .args(&cmd[..cmd.len().min(2)])
                .arg(&path);
            c.args(&cmd[cmd.len().min(2)..]);
            let o = c.stdout(Stdio::null()).stderr(Stdio::piped()).output()?;
            runs += 1;
            let err = String::from_utf8_lossy(&o.stderr);
            let bad = match o.status.code() {
                Some(0) | Some(1) => err.contains("panicked"),
                _ => true,
            };
            if bad {
                findings += 1;
                let keep = dir
                    .join("findings")
                    .join(format!("finding-{findings}.{ext}"));
                fs::write(&keep, &input)?;
                eprintln!(
                    "finding: {cmd:?} on {} exited {:?}: {}",
                    keep.display(),
                    o.status.code(),
                    err.trim()
                );
            }
        }
    }
    println!(
        "fuzz: {runs} runs over {} seeds in {seconds} s, {findings} findings",
        seeds.len()
    );
    if findings > 0 {
        bail!("{findings} inputs crashed or hung a reader; see bench-out/fuzz/findings/");
    }
    Ok(())
}
