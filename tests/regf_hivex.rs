//! Registry hives (regf) checked against hivex (`hivexregedit`, `hivexsh`, `hivexml`) and
//! chntpw's `reged`, using hives Windows wrote (the real-hives fixtures) and hives hivex
//! made.
//!
//! Export comparison ("agreed normalisation"): both exports are read line by line; the
//! header, blank lines and CR are dropped; every value is rewritten as
//! `<name token>=hex(<type>):<bytes>` (a quoted string becomes hex(1) of its UTF-16LE
//! bytes plus a NUL, `dword:` becomes hex(4) of its 4 little-endian bytes, regedit's
//! `hex:` becomes hex(3)); the name token (`@` or the quoted, escaped name) is kept as
//! printed. Blocks are sorted by their key path split at `\` (component by component,
//! as hivexregedit sorts children) and values within a block by name, because
//! hivexregedit sorts both while we print them in stored order. Everything else must
//! match exactly. hivexregedit prints 8-bit key names as raw bytes, which are read back
//! as Latin-1 (how Windows widens such names) when they are not valid UTF-8.
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use nanoforge::formats::regf::{
    self, export_reg, merge_reg, value_type, Hive, Key, ParseOptions, Value,
};

// ---------------------------------------------------------------------------------------
// Fixtures

/// Directory of the xz-compressed real hives: `$NANOFORGE_REAL_HIVES`, else
/// `shared/fixtures/real-hives` found beside one of the crate's parent directories.
fn real_hives_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("NANOFORGE_REAL_HIVES") {
        return PathBuf::from(d);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in manifest.ancestors() {
        for cand in [
            dir.join("fixtures/real-hives"),
            dir.join("shared/fixtures/real-hives"),
        ] {
            if cand.join("BCD.xz").is_file() {
                return cand;
            }
        }
    }
    panic!("real-hives fixtures not found; set NANOFORGE_REAL_HIVES to the folder holding BCD.xz");
}

/// Decompress a fixture into `dir` and return its path.
fn fixture(dir: &Path, name: &str) -> PathBuf {
    let src = real_hives_dir().join(format!("{name}.xz"));
    let out = dir.join(name);
    if !out.exists() {
        let o = common::run(common::tool("xz").arg("-dc").arg(&src));
        assert!(o.status.success(), "xz -dc {} failed", src.display());
        std::fs::write(&out, o.stdout).unwrap();
    }
    out
}

fn lenient() -> ParseOptions<'static> {
    ParseOptions {
        validate: false,
        logs: Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------
// Export normalisation (see the module comment)

fn utf16z_hex(s: &str) -> String {
    let mut b: Vec<u8> = s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
    b.extend([0, 0]);
    hex(&b)
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Split a value line into (name token, right-hand side).
fn split_value_line(l: &str) -> (String, String) {
    if let Some(r) = l.strip_prefix("@=") {
        return ("@".into(), r.into());
    }
    let b = l.as_bytes();
    assert_eq!(b[0], b'"', "value line {l:?}");
    let mut i = 1;
    while b[i] != b'"' {
        i += if b[i] == b'\\' { 2 } else { 1 };
    }
    (l[..=i].to_string(), l[i + 2..].to_string())
}

fn unquote(s: &str) -> String {
    let inner = &s[1..s.len() - 1];
    let mut out = String::new();
    let mut it = inner.chars();
    while let Some(c) = it.next() {
        out.push(if c == '\\' { it.next().unwrap() } else { c });
    }
    out
}

fn normalise(export: &str) -> Vec<String> {
    let mut blocks: BTreeMap<Vec<String>, Vec<(String, String)>> = BTreeMap::new();
    let mut cur: Option<Vec<String>> = None;
    for line in export.lines() {
        let l = line.trim_end_matches('\r');
        if l.is_empty() || l.starts_with("Windows Registry Editor") {
            continue;
        }
        if l.starts_with('[') && l.ends_with(']') {
            let path: Vec<String> = l[1..l.len() - 1]
                .split('\\')
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect();
            assert!(
                blocks.insert(path.clone(), Vec::new()).is_none(),
                "key printed twice: {l}"
            );
            cur = Some(path);
            continue;
        }
        let (name, rhs) = split_value_line(l);
        let norm = if rhs.starts_with('"') {
            format!("hex(1):{}", utf16z_hex(&unquote(&rhs)))
        } else if let Some(d) = rhs.strip_prefix("dword:") {
            format!(
                "hex(4):{}",
                hex(&u32::from_str_radix(d, 16).unwrap().to_le_bytes())
            )
        } else if let Some(h) = rhs.strip_prefix("hex:") {
            format!("hex(3):{h}")
        } else {
            rhs
        };
        blocks
            .get_mut(cur.as_ref().expect("value before key"))
            .unwrap()
            .push((name, norm));
    }
    let mut out = Vec::new();
    for (path, mut values) in blocks {
        values.sort();
        out.push(format!("[{}]", path.join("\\")));
        out.extend(values.into_iter().map(|(n, v)| format!("{n}={v}")));
    }
    out
}

/// hivexregedit prints 8-bit ("compressed") key names as raw bytes; Windows widens each
/// byte to one UTF-16 unit (Latin-1). Decode valid UTF-8 as such, other bytes as Latin-1.
fn utf8_or_latin1(mut b: &[u8]) -> String {
    let mut out = String::new();
    loop {
        match std::str::from_utf8(b) {
            Ok(s) => {
                out.push_str(s);
                return out;
            }
            Err(e) => {
                let (good, bad) = b.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(good).unwrap());
                out.push(bad[0] as char);
                b = &bad[1..];
            }
        }
    }
}

fn hivex_export(hive: &Path, key: &str) -> String {
    let mut cmd = common::tool("hivexregedit");
    cmd.arg("--export").arg(hive).arg(key);
    let o = common::run(&mut cmd);
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    utf8_or_latin1(&o.stdout)
}

/// First difference between two normalised exports, for a readable failure.
fn assert_same_export(ours: &[String], theirs: &[String], what: &str) {
    if ours != theirs {
        let i = ours
            .iter()
            .zip(theirs)
            .position(|(a, b)| a != b)
            .unwrap_or(ours.len().min(theirs.len()));
        let cut = |s: Option<&String>| s.map(|s| s.chars().take(240).collect::<String>());
        panic!(
            "{what}: exports differ at line {i} (ours {} lines, hivex {}):\n ours:  {:?}\n hivex: {:?}",
            ours.len(),
            theirs.len(),
            cut(ours.get(i)),
            cut(theirs.get(i))
        );
    }
}

// ---------------------------------------------------------------------------------------
// Real hives

/// Clean hives parse strictly and export exactly what hivexregedit exports.
#[test]
fn real_clean_hives_match_hivexregedit() {
    let tmp = common::tempdir();
    for name in ["BCD", "SAM", "NTUSER.DAT", "SYSTEM"] {
        let p = fixture(tmp.path(), name);
        let hive = Hive::parse(&common::read(&p)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(hive.warnings.is_empty());
        let ours = normalise(&export_reg(&hive, None).unwrap());
        assert_same_export(&ours, &normalise(&hivex_export(&p, "\\")), name);
    }
}

/// Dirty hives without logs: strict parsing refuses with a message naming the logs,
/// lenient parsing reads the primary file as hivex does.
#[test]
fn real_dirty_hives_without_logs() {
    let tmp = common::tempdir();
    for name in ["SECURITY", "amcache.hve", "SYSTEM_WIN_10_1709"] {
        let p = fixture(tmp.path(), name);
        let bytes = common::read(&p);
        let e = Hive::parse(&bytes).unwrap_err().to_string();
        assert!(e.contains("dirty") && e.contains(".LOG1"), "{name}: {e}");
        let hive = Hive::parse_with(&bytes, &lenient()).unwrap();
        assert!(!hive.warnings.is_empty());
        let ours = normalise(&export_reg(&hive, None).unwrap());
        assert_same_export(&ours, &normalise(&hivex_export(&p, "\\")), name);
    }
}

/// Dirty hives with their logs: recovery applies log entries whose Marvin32 hashes
/// check, the result parses strictly, differs from the stale primary, and hivex reads
/// the recovered file exactly as we do.
#[test]
fn real_dirty_hives_recover_from_logs() {
    let tmp = common::tempdir();
    for (name, l1, l2) in [
        ("SYSTEM_B", "SYSTEM_B.LOG1", "SYSTEM_B.LOG2"),
        (
            "transactions_NTUSER.DAT",
            "transactions_ntuser.dat.log1",
            "transactions_ntuser.dat.log2",
        ),
        ("UsrClass.dat", "UsrClass.dat.LOG1", "UsrClass.dat.LOG2"),
    ] {
        let primary = common::read(&fixture(tmp.path(), name));
        let log1 = common::read(&fixture(tmp.path(), l1));
        let log2 = common::read(&fixture(tmp.path(), l2));
        let e = Hive::parse(&primary).unwrap_err().to_string();
        assert!(e.contains("dirty"), "{name}: {e}");

        let rec = regf::recover(&primary, &[&log1, &log2]).unwrap();
        assert!(rec.entries_applied > 0, "{name}: nothing applied");
        let bb = regf::BaseBlock::parse(&rec.data).unwrap();
        assert_eq!(bb.primary_sequence_number, bb.secondary_sequence_number);
        assert_eq!(bb.primary_sequence_number, rec.last_sequence);
        assert!(regf::BaseBlock::checksum_ok(&rec.data));

        let opts = ParseOptions {
            validate: true,
            logs: vec![&log1, &log2],
        };
        let hive = Hive::parse_with(&primary, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
        let stale = Hive::parse_with(&primary, &lenient()).unwrap();
        assert_ne!(hive.root, stale.root, "{name}: the logs changed nothing");

        let rec_path = tmp.path().join(format!("{name}.recovered"));
        std::fs::write(&rec_path, &rec.data).unwrap();
        let ours = normalise(&export_reg(&hive, None).unwrap());
        assert_same_export(&ours, &normalise(&hivex_export(&rec_path, "\\")), name);
    }
}

/// Write a model, check determinism, and return the bytes.
fn write_checked(h: &Hive, what: &str) -> Vec<u8> {
    let a = h.to_bytes().unwrap_or_else(|e| panic!("{what}: {e}"));
    let b = h.to_bytes().unwrap();
    assert!(a == b, "{what}: two writes differ");
    a
}

/// Hives we write from real hives: hivexregedit exports them exactly as it exports the
/// source, our reader reads the same tree back, and a second write of the re-read tree
/// gives identical bytes.
#[test]
fn rewritten_real_hives_read_back_equal() {
    let tmp = common::tempdir();
    for name in ["BCD", "SAM", "NTUSER.DAT", "SYSTEM"] {
        let p = fixture(tmp.path(), name);
        let hive = Hive::parse(&common::read(&p)).unwrap();
        let bytes = write_checked(&hive, name);
        let out = tmp.path().join(format!("{name}.ours"));
        std::fs::write(&out, &bytes).unwrap();
        let back = Hive::parse(&bytes).unwrap_or_else(|e| panic!("{name} rewritten: {e}"));
        assert!(back.root == hive.root, "{name}: tree changed by a write");
        assert!(
            write_checked(&back, name) == bytes,
            "{name}: write is not a fixpoint"
        );
        // Both sides are hivexregedit's own output: they must be identical bytes.
        let (a, b) = (hivex_export(&p, "\\"), hivex_export(&out, "\\"));
        if a != b {
            let l: Vec<&str> = a.lines().collect();
            let r: Vec<&str> = b.lines().collect();
            assert_same_export(
                &l.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                &r.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                name,
            );
        }
    }
}
