//! Helpers shared by the integration tests: external oracle tools, temp dirs, the CLI.
//!
//! A test that needs a missing tool fails (it never passes by skipping): install the
//! oracles with `cargo xtask deps`.
#![allow(dead_code)]

pub mod boot;
pub mod hives;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of an external tool, or a failing test that says how to get it.
pub fn require(tool: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]) {
        let p = dir.join(tool);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "the oracle tool '{tool}' is not installed; run `cargo xtask deps` (CI={:?})",
        std::env::var("CI").ok()
    );
}

/// Run a command, require success, return stdout as text.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{:?} failed with {}:\nstdout:\n{}\nstderr:\n{}",
        cmd,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run a command and return its output whatever the status.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Command for an external tool (fails the test if it is missing).
pub fn tool(name: &str) -> Command {
    Command::new(require(name))
}

/// The nanoforge binary built for this test run, with a fixed build time.
pub fn nanoforge() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nanoforge"));
    c.env("SOURCE_DATE_EPOCH", "1700000000");
    c
}

/// A fresh temporary directory, removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary directory")
}

/// Bytes of a file.
pub fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// A small self-relative security descriptor (MS-DTYP 2.4.6): owner S-1-5-32-<owner_rid>,
/// group Administrators, a DACL allowing `mask` to Users.
pub fn test_sd(owner_rid: u32, mask: u32) -> Vec<u8> {
    // Self-relative: header, DACL with one ACE for S-1-5-32-<rid>, owner, group.
    let sid = |rid: u32| {
        let mut v = vec![1u8, 2, 0, 0, 0, 0, 0, 5, 32, 0, 0, 0];
        v.extend_from_slice(&rid.to_le_bytes());
        v
    };
    let ace_sid = sid(545);
    let acl_len = 8 + 8 + ace_sid.len();
    let mut v = vec![1u8, 0, 0x04, 0x80];
    v.extend_from_slice(&((20 + acl_len) as u32).to_le_bytes());
    v.extend_from_slice(&((20 + acl_len + 16) as u32).to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&20u32.to_le_bytes());
    v.extend_from_slice(&[2, 0]);
    v.extend_from_slice(&(acl_len as u16).to_le_bytes());
    v.extend_from_slice(&[1, 0, 0, 0]);
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(&((8 + ace_sid.len()) as u16).to_le_bytes());
    v.extend_from_slice(&mask.to_le_bytes());
    v.extend_from_slice(&ace_sid);
    v.extend_from_slice(&sid(owner_rid));
    v.extend_from_slice(&sid(544));
    v
}

/// Deterministic scrambled bytes.
pub fn scrambled(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

/// A plain file as a positional write target for the volume writers.
pub struct FileDisk(pub std::fs::File, pub u64);

impl nanoforge::core::block::WriteAt for FileDisk {
    fn size(&self) -> u64 {
        self.1
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        nanoforge::core::block::check_range(offset, data.len(), self.1)?;
        self.0.write_all_at(data, offset)
    }
    fn finish(self: Box<Self>) -> std::io::Result<()> {
        self.0.sync_all()
    }
}
