//! Real hives Windows wrote (shared/fixtures/real-hives, xz-compressed) and the normal form
//! in which our .reg exports and hivexregedit's are compared: values rewritten as `hex(t):`,
//! keys and values sorted as hivex sorts them, hivex's raw 8-bit names read as Latin-1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Directory of the xz-compressed real hives: `$NANOFORGE_REAL_HIVES`, else
/// `shared/fixtures/real-hives` found beside one of the crate's parent directories.
pub fn real_hives_dir() -> PathBuf {
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

/// Decompress a fixture once into the target's scratch directory and return its path.
pub fn fixture(name: &str) -> PathBuf {
    let src = real_hives_dir().join(format!("{name}.xz"));
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("regf-real-hives");
    std::fs::create_dir_all(&cache).unwrap();
    let out = cache.join(name);
    if !out.exists() {
        let o = super::run(super::tool("xz").arg("-dc").arg(&src));
        assert!(o.status.success(), "xz -dc {} failed", src.display());
        // Tests run in parallel: publish the file atomically.
        let part = cache.join(format!("{name}.{:?}.part", std::thread::current().id()));
        std::fs::write(&part, o.stdout).unwrap();
        std::fs::rename(&part, &out).unwrap();
    }
    out
}

pub fn utf16z_hex(s: &str) -> String {
    let mut b: Vec<u8> = s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
    b.extend([0, 0]);
    hex(&b)
}

pub fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Split a value line into (name token, right-hand side).
pub fn split_value_line(l: &str) -> (String, String) {
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

pub fn unquote(s: &str) -> String {
    let inner = &s[1..s.len() - 1];
    let mut out = String::new();
    let mut it = inner.chars();
    while let Some(c) = it.next() {
        out.push(if c == '\\' { it.next().unwrap() } else { c });
    }
    out
}

pub fn normalise(export: &str) -> Vec<String> {
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
pub fn utf8_or_latin1(mut b: &[u8]) -> String {
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
