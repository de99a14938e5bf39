//! `nanoforge media lock` and `media verify` on a synthetic media tree; digests are checked
//! against coreutils `sha256sum`.
mod common;

use std::process::Command;

#[test]
fn lock_matches_sha256sum_and_verify_detects_a_changed_byte() {
    common::require("sha256sum");
    let tmp = common::tempdir();
    let dir = tmp.path();
    let root = dir.join("media");
    std::fs::create_dir_all(root.join("NanoServer/Packages/en-US")).unwrap();
    std::fs::write(root.join("NanoServer/NanoServer.wim"), b"not a real wim").unwrap();
    std::fs::write(
        root.join("NanoServer/Packages/Microsoft-NanoServer-Guest-Package.cab"),
        b"neutral",
    )
    .unwrap();
    std::fs::write(
        root.join("NanoServer/Packages/en-US/Microsoft-NanoServer-Guest-Package_en-US.cab"),
        b"lang",
    )
    .unwrap();
    let lock = dir.join("media.lock");
    let bin = env!("CARGO_BIN_EXE_nanoforge");
    let st = Command::new(bin)
        .args(["media", "lock", "--media"])
        .arg(&root)
        .arg("-o")
        .arg(&lock)
        .status()
        .unwrap();
    assert!(st.success());
    let text = std::fs::read_to_string(&lock).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len(), 3);
    for l in lines {
        let mut parts = l.splitn(3, ' ');
        assert_eq!(parts.next(), Some("sha256"));
        let digest = parts.next().unwrap();
        let rel = parts.next().unwrap();
        let out = Command::new("sha256sum")
            .arg(root.join(rel))
            .output()
            .unwrap();
        let theirs = String::from_utf8(out.stdout).unwrap();
        assert_eq!(theirs.split_whitespace().next().unwrap(), digest, "{rel}");
    }
    let ok = Command::new(bin)
        .args(["media", "verify", "--media"])
        .arg(&root)
        .arg("--lock")
        .arg(&lock)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    std::fs::write(root.join("NanoServer/NanoServer.wim"), b"not a real wiM").unwrap();
    let bad = Command::new(bin)
        .args(["media", "verify", "--media"])
        .arg(&root)
        .arg("--lock")
        .arg(&lock)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("NanoServer/NanoServer.wim") && err.contains("expects"),
        "{err}"
    );
}
