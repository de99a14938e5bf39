//! Cabinet listing and extraction against gcab (writer) and cabextract (independent lister).
mod common;

use nanoforge::servicing::cab;
use std::process::Command;

fn build_cab(dir: &std::path::Path, compress: bool) -> std::path::PathBuf {
    common::require("gcab");
    std::fs::create_dir_all(dir.join("src/sub")).unwrap();
    std::fs::write(
        dir.join("src/update.mum"),
        b"<?xml version=\"1.0\"?><assembly/>",
    )
    .unwrap();
    std::fs::write(dir.join("src/sub/payload.dll"), vec![0x5au8; 70_000]).unwrap();
    let out = dir.join("p.cab");
    let mut cmd = Command::new("gcab");
    cmd.current_dir(dir.join("src"))
        .arg(if compress { "-cz" } else { "-c" })
        .arg(&out);
    cmd.args(["update.mum", "sub/payload.dll"]);
    assert!(cmd.status().unwrap().success());
    out
}

#[test]
fn listing_agrees_with_cabextract_and_extraction_round_trips() {
    common::require("cabextract");
    for compress in [false, true] {
        let tmp = common::tempdir();
        let cabfile = build_cab(tmp.path(), compress);
        let ours = cab::list(&cabfile).unwrap();
        let out = Command::new("cabextract")
            .arg("-l")
            .arg(&cabfile)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let mut theirs: Vec<(u64, String)> = text
            .lines()
            .filter_map(|l| {
                let mut cols = l.split('|').map(str::trim);
                let size = cols.next()?.parse::<u64>().ok()?;
                let _date = cols.next()?;
                Some((size, cols.next()?.replace('\\', "/")))
            })
            .collect();
        theirs.sort();
        let mut mine: Vec<(u64, String)> = ours
            .iter()
            .map(|e| (e.size, e.name.replace('\\', "/")))
            .collect();
        mine.sort();
        assert_eq!(mine, theirs, "compress={compress}");
        let files = cab::extract_all(&cabfile).unwrap();
        assert_eq!(files.len(), 2);
        let payload = files.iter().find(|(n, _)| n == "sub/payload.dll").unwrap();
        assert_eq!(payload.1, vec![0x5au8; 70_000]);
    }
}

#[test]
fn truncated_cab_error_names_the_file() {
    let tmp = common::tempdir();
    let cabfile = build_cab(tmp.path(), true);
    let bytes = std::fs::read(&cabfile).unwrap();
    std::fs::write(&cabfile, &bytes[..bytes.len() / 2]).unwrap();
    let e = match cab::extract_all(&cabfile) {
        Ok(_) => panic!("truncated cab accepted"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("p.cab"), "{e}");
    std::fs::write(&cabfile, &bytes[..20]).unwrap();
    let e = cab::list(&cabfile).unwrap_err().to_string();
    assert!(e.contains("p.cab"), "{e}");
}
