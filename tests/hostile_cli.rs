//! Malformed images through the `nanoforge` binary: a non-zero exit, exactly one line on
//! stderr naming the file, no panic, and no output left behind.

mod common;

use common::*;
use std::path::Path;

/// Every file kept in the hostile catalogues for the container formats.
fn catalogue_files() -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile");
    let mut out = Vec::new();
    for fmt in ["vhdx", "vhd"] {
        if let Ok(rd) = std::fs::read_dir(root.join(fmt)) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "vhdx" || x == "vhd") {
                    out.push(p);
                }
            }
        }
    }
    out.sort();
    out
}

/// Generated cases: signatures followed by garbage, truncations of a good image.
fn generated(dir: &Path) -> Vec<std::path::PathBuf> {
    let good = dir.join("good.vhdx");
    run_ok(
        nanoforge()
            .args(["disk", "create", "--size", "1GiB", "-o"])
            .arg(&good),
    );
    let bytes = read(&good);
    let mut cases = Vec::new();
    let mut put = |name: &str, data: Vec<u8>| {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        cases.push(p);
    };
    put("truncated-64k.vhdx", bytes[..65536].to_vec());
    put("truncated-1m.vhdx", bytes[..1 << 20].to_vec());
    let mut sig_only = b"vhdxfile".to_vec();
    sig_only.resize(4096, 0xAA);
    put("signature-then-garbage.vhdx", sig_only);
    let mut footer = vec![0x55u8; 4096];
    footer[4096 - 512..4096 - 504].copy_from_slice(b"conectix");
    put("vhd-footer-garbage.vhd", footer);
    let mut flipped = bytes.clone();
    for b in &mut flipped[64 * 1024..64 * 1024 + 64] {
        *b ^= 0xFF;
    }
    for b in &mut flipped[128 * 1024..128 * 1024 + 64] {
        *b ^= 0xFF;
    }
    put("both-headers-corrupt.vhdx", flipped);
    cases
}

#[test]
fn malformed_images_fail_with_one_line_and_leave_nothing() {
    let t = tempdir();
    let mut cases = generated(t.path());
    cases.extend(catalogue_files());
    assert!(cases.len() >= 5);
    for case in &cases {
        for args in [vec!["inspect"], vec!["convert"]] {
            let out = t.path().join("out.img");
            let mut c = nanoforge();
            c.args(&args).arg(case);
            if args[0] == "convert" {
                c.arg(&out);
            }
            let o = run(&mut c);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "{args:?} {} succeeded", case.display());
            assert_eq!(
                o.status.code(),
                Some(1),
                "{args:?} {}: {err}",
                case.display()
            );
            assert_eq!(
                err.lines().count(),
                1,
                "{args:?} {}: not one line:\n{err}",
                case.display()
            );
            let name = case.file_name().unwrap().to_string_lossy();
            assert!(
                err.contains(&*name),
                "{args:?}: error does not name the file: {err}"
            );
            assert!(!err.contains("panicked"), "{err}");
            assert!(!out.exists(), "convert left {} behind", out.display());
        }
    }
}
