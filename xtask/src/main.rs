//! Project tasks: `cargo xtask deps | test | bench | fuzz`.
//!
//! `deps` installs the independent checkers the tests use (Debian packages); `test` runs
//! formatting, lints and every test; `bench` measures us against the peer tools in the
//! same run and prints ratios.

mod bench;
mod fuzz;

use anyhow::{bail, Context, Result};
use std::process::Command;

/// Debian packages holding the oracle tools the tests run.
const PACKAGES: &[&str] = &[
    "qemu-utils",
    "qemu-system-x86",
    "ovmf",
    "grub-efi-amd64-bin",
    "gdisk",
    "fdisk",
    "dosfstools",
    "mtools",
    "ntfs-3g",
    "wimtools",
    "libhivex-bin",
    "libwin-hivex-perl",
    "chntpw",
    "gcab",
    "cabextract",
    "xz-utils",
    "time",
    "libvhdi-utils",
    "python3-libvhdi",
    "libfsntfs-utils",
];

const HELP: &str = "\
cargo xtask <task>

tasks:
  deps    apt-get update, then install every oracle tool the tests use (one apt-get install)
  demo    build nanoforge (release) and run the main job on the built-in demo media:
          `nanoforge build templates/container-host.toml --media demo -o
          demo-out/container-host.vhdx`, then inspect the result
  test    cargo fmt --check, cargo clippy -D warnings, then every test (CI=true makes a
          missing tool a failure)
  fuzz [--seconds N]
          time-boxed mutation loop (default 60 s) over WIM and disk image readers through
          the binary; panics, signals and hangs are findings, saved in bench-out/fuzz/
  bench [vhdx|wim|apply|build]... [--quick]
          benchmarks against the peer tools, same input, same run; prints ratios.
          vhdx: raw → VHDX against qemu-img convert; wim: wim verify against wimlib-imagex
          verify (LZX and LZMS solid); apply: WIM → VHDX against mkntfs + wimlib-imagex
          apply + qemu-img convert; build: the container-host build on the demo media, alone
          and with a large base image, against mkntfs + wimlib-imagex apply (OS and base
          image) + qemu-img convert. The bench WIMs are captured from /usr once and kept in
          bench-out/. --quick uses smaller inputs.
";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("deps") => deps(),
        Some("test") => test(),
        Some("demo") => demo(),
        Some("bench") => bench::run(&args[1..]),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("-h") | Some("--help") | Some("help") | None => {
            print!("{HELP}");
            Ok(())
        }
        Some(other) => bail!("unknown task '{other}'\n{HELP}"),
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {cmd:?}");
    let st = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed with {st}");
    }
    Ok(())
}

/// The Debian suite of this machine (e.g. "bookworm"), from /etc/os-release.
fn debian_codename() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

fn deps() -> Result<()> {
    let sudo: &[&str] = if is_root() { &[] } else { &["sudo"] };
    let apt = |args: &[&str]| {
        let mut all: Vec<&str> = sudo.to_vec();
        all.extend_from_slice(args);
        let mut c = Command::new(all[0]);
        c.args(&all[1..]).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    run(&mut apt(&["apt-get", "update", "-q"]))?;
    // qemu-utils and qemu-system-x86 must come from one suite: a newer qemu-utils from
    // another suite makes qemu-system-x86 uninstallable. Pin both to this release's suite
    // (allowing the downgrade) and install everything in one apt-get call.
    let pinned: Vec<String> = match debian_codename() {
        Some(suite) => PACKAGES
            .iter()
            .map(|p| {
                if p.starts_with("qemu-") {
                    format!("{p}/{suite}")
                } else {
                    p.to_string()
                }
            })
            .collect(),
        None => PACKAGES.iter().map(|p| p.to_string()).collect(),
    };
    let mut args = vec!["apt-get", "install", "-y", "-q", "--allow-downgrades"];
    args.extend(pinned.iter().map(String::as_str));
    run(&mut apt(&args))?;
    run(Command::new("qemu-img").arg("--version"))?;
    run(Command::new("qemu-system-x86_64").arg("--version"))?;
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn test() -> Result<()> {
    run(Command::new("cargo").args(["fmt", "--all", "--", "--check"]))?;
    run(Command::new("cargo").args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(Command::new("cargo").args([
        "test",
        "--workspace",
        "--release",
        "--",
        "--include-ignored",
    ]))?;
    Ok(())
}

fn demo() -> Result<()> {
    run(Command::new("cargo").args(["build", "--release", "--quiet", "-p", "nanoforge"]))?;
    std::fs::create_dir_all("demo-out")?;
    let nf = "target/release/nanoforge";
    run(Command::new(nf).args([
        "build",
        "templates/container-host.toml",
        "--media",
        "demo",
        "--force",
        "-o",
        "demo-out/container-host.vhdx",
    ]))?;
    run(Command::new(nf).args(["inspect", "demo-out/container-host.vhdx"]))?;
    Ok(())
}
