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

use common::hives::{
    fixture, hex, normalise, split_value_line, unquote, utf16z_hex, utf8_or_latin1,
};

use std::collections::BTreeMap;
use std::path::Path;

use nanoforge::formats::regf::{self, export_reg, merge_reg, Hive, Key, ParseOptions};

// ---------------------------------------------------------------------------------------
// Fixtures

fn lenient() -> ParseOptions<'static> {
    ParseOptions {
        validate: false,
        logs: Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------
// Export normalisation (see the module comment)

/// hivexregedit's export of a fixture, computed once per test run (several tests
/// compare against the same real hives).
fn hivex_export_fixture(name: &str) -> std::sync::Arc<String> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    type Slots = Mutex<HashMap<String, Arc<OnceLock<Arc<String>>>>>;
    static CACHE: OnceLock<Slots> = OnceLock::new();
    let slot = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .entry(name.to_string())
        .or_default()
        .clone();
    slot.get_or_init(|| Arc::new(hivex_export(&fixture(name), "\\")))
        .clone()
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

/// Compare two texts line by line, printing only the first difference.
fn assert_text_eq(ours: &str, theirs: &str, what: &str) {
    if ours != theirs {
        let a: Vec<String> = ours.lines().map(String::from).collect();
        let b: Vec<String> = theirs.lines().map(String::from).collect();
        assert_same_export(&a, &b, what);
        panic!("{what}: texts differ in line endings only");
    }
}

// ---------------------------------------------------------------------------------------
// Real hives

/// Clean hives parse strictly and export exactly what hivexregedit exports.
#[test]
fn real_clean_hives_match_hivexregedit() {
    for name in ["BCD", "SAM", "NTUSER.DAT", "SYSTEM"] {
        let p = fixture(name);
        let hive = Hive::parse(&common::read(&p)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(hive.warnings.is_empty());
        let ours = normalise(&export_reg(&hive, None).unwrap());
        assert_same_export(&ours, &normalise(&hivex_export_fixture(name)), name);
    }
}

/// Dirty hives without logs: strict parsing refuses with a message naming the logs,
/// lenient parsing reads the primary file as hivex does.
#[test]
fn real_dirty_hives_without_logs() {
    for name in ["SECURITY", "amcache.hve", "SYSTEM_WIN_10_1709"] {
        let p = fixture(name);
        let bytes = common::read(&p);
        let e = Hive::parse(&bytes).unwrap_err().to_string();
        assert!(e.contains("dirty") && e.contains(".LOG1"), "{name}: {e}");
        let hive = Hive::parse_with(&bytes, &lenient()).unwrap();
        assert!(!hive.warnings.is_empty());
        if name == "SYSTEM_WIN_10_1709" {
            // 15 MB: the export comparison of the other SYSTEM hives covers it; keep the
            // test's run time down.
            assert!(hive.root.count_keys() > 40_000);
            continue;
        }
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
        let primary = common::read(&fixture(name));
        let log1 = common::read(&fixture(l1));
        let log2 = common::read(&fixture(l2));
        let e = Hive::parse(&primary).unwrap_err().to_string();
        assert!(e.contains("dirty"), "{name}: {e}");

        let rec = regf::recover(&primary, &[&log1, &log2]).unwrap();
        assert!(rec.entries_applied > 0, "{name}: nothing applied");
        assert!(rec.first_sequence >= rec.expected_sequence);
        assert_eq!(
            rec.last_sequence,
            rec.first_sequence + rec.entries_applied as u32 - 1
        );
        let bb = regf::BaseBlock::parse(&rec.data).unwrap();
        assert_eq!(bb.primary_sequence_number, bb.secondary_sequence_number);
        assert_eq!(bb.primary_sequence_number, rec.last_sequence);
        assert!(regf::BaseBlock::checksum_ok(&rec.data));

        let opts = ParseOptions {
            validate: true,
            logs: vec![&log1, &log2],
        };
        let hive = Hive::parse_with(&primary, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
        // A gap between the hive and its logs is reported, never silent.
        assert_eq!(
            !hive.warnings.is_empty(),
            rec.first_sequence != rec.expected_sequence,
            "{name}"
        );
        let hive_bins = |b: &[u8]| b[4096..].to_vec();
        assert_ne!(
            hive_bins(&rec.data),
            hive_bins(&primary),
            "{name}: the logs changed nothing"
        );

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
        let p = fixture(name);
        let hive = Hive::parse(&common::read(&p)).unwrap();
        // The 11 MB SYSTEM hive is written once, to keep the run time down; the smaller
        // ones are checked for determinism and for being a fixpoint of read-then-write.
        let big = name == "SYSTEM";
        let bytes = if big {
            hive.to_bytes().unwrap()
        } else {
            write_checked(&hive, name)
        };
        let out = tmp.path().join(format!("{name}.ours"));
        std::fs::write(&out, &bytes).unwrap();
        let back = Hive::parse(&bytes).unwrap_or_else(|e| panic!("{name} rewritten: {e}"));
        assert!(back.root == hive.root, "{name}: tree changed by a write");
        assert!(
            big || write_checked(&back, name) == bytes,
            "{name}: write is not a fixpoint"
        );
        // Both sides are hivexregedit's own output: they must be identical.
        assert_text_eq(&hivex_export(&out, "\\"), &hivex_export_fixture(name), name);
    }
}

// ---------------------------------------------------------------------------------------
// A corpus covering every value type, big data, many subkeys and Unicode names

fn utf16z(s: &str) -> Vec<u8> {
    let mut b: Vec<u8> = s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
    b.extend([0, 0]);
    b
}

/// Deterministic filler bytes.
fn pattern(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// .reg text in our canonical export form (so merge-then-export is the identity):
/// keys in registry order, parents first, values in the order given.
fn corpus_reg(many: usize) -> String {
    let mut t = String::from("Windows Registry Editor Version 5.00\r\n\r\n[\\Test]\r\n");
    let mut v = |name: &str, rhs: String| {
        let n = if name.is_empty() {
            "@".to_string()
        } else {
            format!("\"{name}\"")
        };
        t.push_str(&format!("{n}={rhs}\r\n"));
    };
    v("", "\"default value\"".into());
    v("none", format!("hex(0):{}", hex(&[1, 2, 3])));
    v("sz", "\"quote \\\" and backslash \\\\ in text\"".into());
    v(
        "expand",
        format!("hex(2):{}", hex(&utf16z("%SystemRoot%\\System32"))),
    );
    v("binary", format!("hex(3):{}", hex(&pattern(40, 1))));
    v("dword", "dword:c0ffee01".into());
    v(
        "dword_be",
        format!("hex(5):{}", hex(&[0x12, 0x34, 0x56, 0x78])),
    );
    v(
        "link",
        format!(
            "hex(6):{}",
            hex(&utf16z("\\Registry\\Machine\\System")[..46])
        ),
    );
    let mut multi = utf16z("first");
    multi.extend(utf16z("second"));
    multi.extend([0, 0]);
    v("multi", format!("hex(7):{}", hex(&multi)));
    v("resource_list", format!("hex(8):{}", hex(&pattern(36, 2))));
    v("full_resource", format!("hex(9):{}", hex(&pattern(28, 3))));
    v("requirements", format!("hex(a):{}", hex(&pattern(52, 4))));
    v(
        "qword",
        format!("hex(b):{}", hex(&0x0102_0304_0506_0708u64.to_le_bytes())),
    );
    v("odd_type", format!("hex(12345):{}", hex(&[0xff])));
    v("empty", "hex(3):".into());
    v("short_dword", format!("hex(4):{}", hex(&[1, 2])));
    v("big_16k", format!("hex(3):{}", hex(&pattern(16_345, 5))));
    v("big_70k", format!("hex(3):{}", hex(&pattern(70_000, 6))));
    t.push_str("\r\n[\\Test\\Many]\r\n\r\n");
    let mut names: Vec<String> = (0..many).map(|i| format!("k{i:05}")).collect();
    names.sort_by_key(|n| n.to_uppercase());
    for n in &names {
        t.push_str(&format!(
            "[\\Test\\Many\\{n}]\r\n\"n\"=dword:{:08x}\r\n\r\n",
            n[1..].parse::<u32>().unwrap()
        ));
    }
    t.push_str(
        "[\\Test\\Ключ]\r\n\"значение\"=\"日本語 テキスト\"\r\n\"é\"=dword:00000001\r\n\r\n",
    );
    t.push_str("[\\Test\\Ключ\\Ελληνικά]\r\n\r\n");
    t
}

/// Structural checks hivex does not make: every key node's security record is counted
/// exactly, the security records form one circular doubly linked list, hash leaves are
/// sorted by upper-cased name with correct hashes, and cells tile every bin.
fn check_structure(bytes: &[u8]) {
    let le32 = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let bins_size = le32(40) as usize;
    let mut sks: BTreeMap<u32, regf::KeySecurity> = BTreeMap::new();
    let mut nks: BTreeMap<u32, regf::KeyNode> = BTreeMap::new();
    let mut leaves: Vec<(u32, Vec<(u32, u32)>)> = Vec::new();
    let mut off = 0usize;
    while off < bins_size {
        let bin = regf::HiveBin::parse(bytes, 4096 + off, off as u32).unwrap();
        let end = off + bin.size as usize;
        let mut c = off + 32;
        while c < end {
            let size = i32::from_le_bytes(bytes[4096 + c..4096 + c + 4].try_into().unwrap());
            let len = size.unsigned_abs() as usize;
            assert!(
                len >= 8 && len.is_multiple_of(8) && c + len <= end,
                "cell at {c:#x} size {size}"
            );
            let data = &bytes[4096 + c + 4..4096 + c + len];
            if size < 0 {
                match &data[0..2] {
                    b"sk" => {
                        sks.insert(c as u32, regf::KeySecurity::parse(data, 0).unwrap());
                    }
                    b"nk" => {
                        nks.insert(c as u32, regf::KeyNode::parse(data, 0).unwrap());
                    }
                    b"lh" => {
                        let n = u16::from_le_bytes([data[2], data[3]]) as usize;
                        let e = (0..n)
                            .map(|i| {
                                let a = 4 + 8 * i;
                                let g = |x: usize| {
                                    u32::from_le_bytes(data[x..x + 4].try_into().unwrap())
                                };
                                (g(a), g(a + 4))
                            })
                            .collect();
                        leaves.push((c as u32, e));
                    }
                    _ => {}
                }
            }
            c += len;
        }
        off = end;
    }
    for (off, sk) in &sks {
        let users = nks
            .values()
            .filter(|n| n.key_security_offset == *off)
            .count() as u32;
        assert_eq!(sk.reference_count, users, "sk at {off:#x}");
        assert_eq!(sks[&sk.flink].blink, *off, "sk list broken at {off:#x}");
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut at = *sks.keys().next().unwrap();
    while seen.insert(at) {
        at = sks[&at].flink;
    }
    assert_eq!(seen.len(), sks.len(), "sk list is not one cycle");
    let name = |nk: &regf::KeyNode| -> String {
        if nk.flags & regf::key_flags::COMP_NAME != 0 {
            nk.key_name.iter().map(|&b| b as char).collect()
        } else {
            let u: Vec<u16> = nk
                .key_name
                .chunks(2)
                .map(|p| u16::from_le_bytes([p[0], p[1]]))
                .collect();
            String::from_utf16(&u).unwrap()
        }
    };
    let upper = |s: &str| {
        s.encode_utf16()
            .map(regf::upcase_unit)
            .collect::<Vec<u16>>()
    };
    for (off, entries) in &leaves {
        let names: Vec<String> = entries.iter().map(|(n, _)| name(&nks[n])).collect();
        for ((_, h), n) in entries.iter().zip(&names) {
            assert_eq!(*h, regf::lh_hash(n), "hash of {n} in lh at {off:#x}");
        }
        for w in names.windows(2) {
            assert!(
                upper(&w[0]) < upper(&w[1]),
                "lh at {off:#x} not sorted: {} >= {}",
                w[0],
                w[1]
            );
        }
    }
}

/// Every key path in a model, for comparing with tools that list keys.
fn key_count(k: &Key) -> usize {
    k.count_keys()
}

/// Merge .reg text with hivexregedit into a copy of a real hive (so keys get the real
/// hive's security descriptors). hivexregedit encodes quoted string data byte by byte,
/// so quoted strings with non-ASCII text are handed to it as hex(1) UTF-16LE bytes.
fn hivex_merge(base: &Path, out: &Path, text: &str) {
    std::fs::copy(base, out).unwrap();
    let reg = out.with_extension("reg");
    let mut fed = String::new();
    for line in text.lines() {
        let l = line.trim_end_matches('\r');
        if l.starts_with('"') && l.ends_with('"') && !l.is_ascii() {
            let (name, rhs) = split_value_line(l);
            fed.push_str(&format!("{name}=hex(1):{}\n", utf16z_hex(&unquote(&rhs))));
        } else {
            fed.push_str(l);
            fed.push('\n');
        }
    }
    std::fs::write(&reg, fed).unwrap();
    common::run_ok(
        common::tool("hivexregedit")
            .arg("--merge")
            .arg(out)
            .arg(&reg),
    );
}

/// A hive hivex made (every value type, 16 KiB+ and 70 KB values through big data
/// cells, 5,000 subkeys, Unicode names) reads back exactly as hivex reads it, holds the
/// values the .reg file gave, and new keys carry the real hive's security descriptor.
#[test]
fn hivex_made_hive_reads_back_equal() {
    let tmp = common::tempdir();
    let bcd = fixture("BCD");
    let made = tmp.path().join("made.hive");
    let text = corpus_reg(5000);
    hivex_merge(&bcd, &made, &text);

    let hive = Hive::parse(&common::read(&made)).unwrap();
    let ours = normalise(&export_reg(&hive, None).unwrap());
    assert_same_export(
        &ours,
        &normalise(&hivex_export(&made, "\\")),
        "hivex-made hive",
    );

    let mut expected = Hive::new_empty("x", 0);
    merge_reg(&mut expected, &text).unwrap();
    let (got, want) = (hive.key("Test").unwrap(), expected.key("Test").unwrap());
    let strip = |k: &Key| {
        k.values
            .iter()
            .map(|v| (v.name.clone(), v.data_type, v.data.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(got), strip(want));
    assert_eq!(got.subkey("Many").unwrap().subkeys.len(), 5000);
    assert_eq!(got.value("big_70k").unwrap().data, pattern(70_000, 6));
    assert_eq!(got.value("odd_type").unwrap().data_type, 0x12345);
    assert!(
        hive.key("Test\\ключ\\ελληνικά").is_some(),
        "case-insensitive Unicode lookup"
    );
    assert_eq!(
        got.security, hive.root.security,
        "hivex gives new keys the parent's descriptor"
    );
    assert_text_eq(
        &export_reg(&hive, Some("Test")).unwrap(),
        &text,
        "export of the merged subtree",
    );

    // Our rewrite of it: hivex sees the same, the structure checks pass.
    let bytes = write_checked(&hive, "hivex-made hive");
    check_structure(&bytes);
    let ours_path = tmp.path().join("made.ours");
    std::fs::write(&ours_path, &bytes).unwrap();
    assert_text_eq(
        &hivex_export(&ours_path, "\\"),
        &hivex_export(&made, "\\"),
        "rewrite of the hivex-made hive",
    );
}

/// A hive built with our API alone (new root, merged corpus, a class name, a second
/// security descriptor taken from a real hive): hivexregedit exports what we export,
/// hivexml and hivexsh open it, chntpw's reged exports every key, and merging reged's
/// export into an empty hive rebuilds the same keys and values.
#[test]
fn our_new_hive_opens_in_hivex_and_reged() {
    let tmp = common::tempdir();
    let sam = Hive::parse(&common::read(&fixture("SAM"))).unwrap();
    let foreign_sd = sam.key("SAM\\Domains").unwrap().security.clone().unwrap();

    let ts = 0x01D9_0000_0000_0000;
    let mut hive = Hive::new_empty("ROOT", ts);
    let text = corpus_reg(600);
    merge_reg(&mut hive, &text).unwrap();
    hive.key_mut("Test\\Many").unwrap().class_name = Some(utf16z("Class")[..10].to_vec());
    hive.set_security("Test\\Ключ", foreign_sd.to_vec())
        .unwrap();
    assert_text_eq(
        &export_reg(&hive, Some("Test")).unwrap(),
        &text,
        "merge-then-export",
    );

    let bytes = write_checked(&hive, "new hive");
    check_structure(&bytes);
    let path = tmp.path().join("new.hive");
    std::fs::write(&path, &bytes).unwrap();
    let back = Hive::parse(&bytes).unwrap();
    assert!(back.root == hive.root);
    assert_eq!(
        back.key("Test\\Ключ").unwrap().security.as_deref(),
        Some(&*foreign_sd)
    );

    let ours = normalise(&export_reg(&hive, None).unwrap());
    assert_same_export(&ours, &normalise(&hivex_export(&path, "\\")), "new hive");

    let xml = common::run_ok(common::tool("hivexml").arg(&path));
    assert_eq!(
        xml.matches("<node ").count(),
        key_count(&hive.root),
        "hivexml nodes"
    );
    let script = tmp.path().join("script.txt");
    std::fs::write(&script, "cd \\Test\\Many\nls\ncd \\Test\nlsval\n").unwrap();
    let sh = common::run_ok(common::tool("hivexsh").arg("-f").arg(&script).arg(&path));
    assert_eq!(
        sh.lines().filter(|l| l.starts_with('k')).count(),
        600,
        "hivexsh ls"
    );
    assert!(
        sh.contains("\"dword\"=dword:c0ffee01"),
        "hivexsh lsval lacks the dword value"
    );

    // reged (chntpw 140201) turns UTF-16 names into 8-bit text, aborts on a UTF-16 value
    // name with string data (on hivex-made hives too), dumps big data records raw, prints
    // an empty REG_BINARY without its line end and a 2-byte REG_DWORD as 4 bytes. It gets
    // the hive without those, and must export every key of it exactly.
    let mut plain = hive.clone();
    plain.delete_key("Test\\Ключ").unwrap();
    for v in ["empty", "short_dword", "big_16k", "big_70k"] {
        assert!(plain.delete_value("Test", v).unwrap());
    }
    let plain_path = tmp.path().join("plain.hive");
    std::fs::write(&plain_path, write_checked(&plain, "plain hive")).unwrap();
    let out = tmp.path().join("reged.reg");
    common::run_ok(
        common::tool("reged")
            .arg("-x")
            .arg(&plain_path)
            .arg("HKEY_LOCAL_MACHINE\\NEW")
            .arg("\\")
            .arg(&out)
            .stdin(std::process::Stdio::null()),
    );
    let reged_text = regf::decode_reg_file(&common::read(&out)).unwrap();
    assert_eq!(
        reged_text.matches("\n[").count(),
        key_count(&plain.root),
        "keys in reged's export"
    );
    let mut rebuilt = Hive::new_empty("ROOT", ts);
    regf::merge_reg_prefixed(&mut rebuilt, &reged_text, Some("HKEY_LOCAL_MACHINE\\NEW")).unwrap();
    assert_same_export(
        &normalise(&export_reg(&rebuilt, None).unwrap()),
        &normalise(&export_reg(&plain, None).unwrap()),
        "reged export merged back",
    );
}

// ---------------------------------------------------------------------------------------
// Merge, export and editing

/// Key path → block text (values as printed), from an export.
fn blocks(export: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut cur: Option<String> = None;
    for l in export.lines() {
        let l = l.trim_end_matches('\r');
        if l.starts_with('[') && l.ends_with(']') {
            cur = Some(l[1..l.len() - 1].to_string());
            out.insert(cur.clone().unwrap(), String::new());
        } else if !l.is_empty() && !l.starts_with("Windows Registry") {
            let b = out.get_mut(cur.as_ref().unwrap()).unwrap();
            b.push_str(l);
            b.push('\n');
        }
    }
    out
}

/// Merge-then-export is the identity on a corpus of .reg files (our corpus and our
/// exports of real Windows hives); regedit's file form (UTF-16LE with BOM) decodes to the
/// same text.
#[test]
fn merge_export_identity_on_corpus() {
    let with_root = |t: String| t.replacen("\r\n\r\n", "\r\n\r\n[\\]\r\n\r\n", 1);
    let mut corpus = vec![
        with_root(corpus_reg(40)),
        "Windows Registry Editor Version 5.00\r\n\r\n[\\]\r\n@=\"\"\r\n\"a \\\"quoted\\\" \\\\ name\"=\"\"\r\n\"x\"=hex(1):41,00\r\n\r\n[\\a]\r\n\r\n[\\B]\r\n\r\n[\\B\\_]\r\n\r\n".to_string(),
    ];
    for name in ["BCD", "SAM"] {
        let h = Hive::parse(&common::read(&fixture(name))).unwrap();
        corpus.push(export_reg(&h, None).unwrap());
    }
    for (i, text) in corpus.iter().enumerate() {
        let mut h = Hive::new_empty("R", 0x01D0_0000_0000_0000);
        merge_reg(&mut h, text).unwrap_or_else(|e| panic!("corpus {i}: {e}"));
        assert_text_eq(&export_reg(&h, None).unwrap(), text, &format!("corpus {i}"));
        let decoded = regf::decode_reg_file(&regf::encode_reg_file(text)).unwrap();
        assert_text_eq(&decoded, text, &format!("corpus {i} through UTF-16"));
        let back = Hive::parse(&write_checked(&h, "corpus")).unwrap();
        assert_text_eq(
            &export_reg(&back, None).unwrap(),
            text,
            &format!("corpus {i} written"),
        );
    }
}

/// regedit's other forms: REGEDIT4 (8-bit hex(2)/hex(7) widened), `hex:`, continuation
/// lines, comments, deletions, a prefix.
#[test]
fn merge_accepts_regedit_forms_and_deletions() {
    let mut h = Hive::new_empty("R", 7);
    let r = regf::merge_reg_prefixed(
        &mut h,
        "REGEDIT4\r\n\r\n; comment\r\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\A\\B]\r\n\"bin\"=hex:01,\\\r\n  02,03\r\n\"exp\"=hex(2):41,42,00\r\n@=\"d\"\r\n\r\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\C]\r\n\"gone\"=dword:1\r\n",
        Some("HKEY_LOCAL_MACHINE\\SOFTWARE"),
    )
    .unwrap();
    assert_eq!((r.keys_created, r.values_set), (3, 4));
    let b = h.key("a\\b").unwrap();
    assert_eq!(b.value("bin").unwrap().data, [1, 2, 3]);
    assert_eq!(b.value("exp").unwrap().data, utf16z("AB"));
    assert_eq!(b.value("").unwrap().data, utf16z("d"));
    let r = merge_reg(&mut h, "Windows Registry Editor Version 5.00\n[-\\A]\n[\\C]\n\"gone\"=-\n\"missing\"=-\n[-\\nothing]\n").unwrap();
    assert_eq!((r.keys_deleted, r.values_deleted), (1, 1));
    assert!(h.key("A").is_none() && h.key("C").unwrap().values.is_empty());
    assert!(regf::merge_reg_prefixed(
        &mut h,
        "REGEDIT4\n[HKEY_CURRENT_USER\\X]\n",
        Some("HKEY_LOCAL_MACHINE")
    )
    .is_err());
}

/// Editing a real hive changes exactly the edited blocks of the export: every other key
/// keeps its values byte for byte (and its timestamp, class name, flags and descriptor
/// in the model), also after writing and re-reading; hivex reads the edited hive as we do.
#[test]
fn edits_keep_untouched_content_identical() {
    let tmp = common::tempdir();
    let original = Hive::parse(&common::read(&fixture("NTUSER.DAT"))).unwrap();
    let mut h = original.clone();
    let names: Vec<String> = h.root.subkeys.iter().map(|k| k.name.clone()).collect();
    assert!(names.len() >= 4);
    let (renamed, deleted, valued) = (names[0].clone(), names[1].clone(), names[2].clone());
    // A key with two values or more, outside the renamed, deleted and extended subtrees.
    fn find(k: &Key, path: String) -> Option<(String, String)> {
        if k.values.len() >= 2 {
            return Some((path, k.values[0].name.clone()));
        }
        k.subkeys
            .iter()
            .find_map(|s| find(s, format!("{path}\\{}", s.name)))
    }
    let delval = names[3..]
        .iter()
        .find_map(|n| find(h.root.subkey(n).unwrap(), n.clone()))
        .expect("a key with two values");
    h.rename_key(&renamed, "Renamed By Test").unwrap();
    h.delete_key(&deleted).unwrap();
    h.set_value(&valued, regf::Value::sz("added", "value"))
        .unwrap();
    assert!(h.delete_value(&delval.0, &delval.1).unwrap());
    h.create_key("Created\\Child", 0x01D0_0000_0000_0001)
        .unwrap();
    h.set_security("Created", regf::default_security_descriptor())
        .unwrap();

    let bytes = write_checked(&h, "edited");
    let back = Hive::parse(&bytes).unwrap();
    let before = blocks(&export_reg(&original, None).unwrap());
    let after = blocks(&export_reg(&back, None).unwrap());
    let under = |p: &str, k: &str| p == format!("\\{k}") || p.starts_with(&format!("\\{k}\\"));
    let mut checked = 0;
    for (p, body) in &before {
        if under(p, &deleted) {
            assert!(!after.contains_key(p), "{p} survived its deletion");
        } else if under(p, &renamed) {
            let np = format!("\\Renamed By Test{}", &p[renamed.len() + 1..]);
            assert_eq!(after.get(&np), Some(body), "{p} renamed");
        } else if *p == format!("\\{valued}") {
            assert_eq!(after[p], format!("{body}\"added\"=\"value\"\n"));
        } else if *p == format!("\\{}", delval.0) {
            assert_eq!(after[p].lines().count() + 1, body.lines().count());
        } else {
            assert_eq!(after.get(p), Some(body), "{p} changed");
            checked += 1;
        }
    }
    assert!(checked > 100);
    assert_eq!(
        after.len(),
        before.len() - before.keys().filter(|p| under(p, &deleted)).count() + 2
    );
    let top = delval.0.split('\\').next().unwrap();
    for name in names[3..].iter().filter(|n| n.as_str() != top) {
        assert!(
            back.root.subkey(name) == original.root.subkey(name),
            "{name} changed in the model"
        );
    }
    let path = tmp.path().join("edited.hive");
    std::fs::write(&path, &bytes).unwrap();
    assert_same_export(
        &normalise(&export_reg(&back, None).unwrap()),
        &normalise(&hivex_export(&path, "\\")),
        "edited hive",
    );
}

// ---------------------------------------------------------------------------------------
// Hostile input (catalogue in tests/hostile/regf/README.md)

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Recompute the base block checksum, so a mutation reaches the structures behind it.
fn fix_checksum(b: &mut [u8]) {
    let sum = regf::checksum(b);
    put32(b, 508, sum);
}

/// File offset of the cell data of the key node at `path` in a hive we wrote (hash
/// leaves, possibly under an index root).
fn nk_at(b: &[u8], path: &str) -> usize {
    let mut off = get32(b, 36) as usize;
    for comp in path.split('\\').filter(|c| !c.is_empty()) {
        let nk = 4096 + off + 4;
        let list = 4096 + get32(b, nk + 28) as usize + 4;
        let mut leaves = vec![list];
        if &b[list..list + 2] == b"ri" {
            let n = u16::from_le_bytes([b[list + 2], b[list + 3]]) as usize;
            leaves = (0..n)
                .map(|i| 4096 + get32(b, list + 4 + 4 * i) as usize + 4)
                .collect();
        }
        off = leaves
            .iter()
            .flat_map(|&l| {
                let n = u16::from_le_bytes([b[l + 2], b[l + 3]]) as usize;
                (0..n).map(move |i| get32(b, l + 4 + 8 * i) as usize)
            })
            .find(|&o| {
                let c = 4096 + o + 4;
                let len = u16::from_le_bytes([b[c + 72], b[c + 73]]) as usize;
                b[c + 76..c + 76 + len].eq_ignore_ascii_case(comp.as_bytes())
            })
            .unwrap_or_else(|| panic!("{comp} not found"));
    }
    4096 + off + 4
}

/// The hive the hostile cases start from: values inline, in a cell and in big data,
/// three levels of keys, and an index root over 600 subkeys.
fn hostile_base() -> Vec<u8> {
    let mut h = Hive::new_empty("ROOT", 0x01D0_0000_0000_0000);
    h.create_key("A\\B\\C", 0x01D0_0000_0000_0000).unwrap();
    h.set_value("A", regf::Value::dword("small", 7)).unwrap();
    h.set_value("A", regf::Value::binary("cell", &pattern(100, 9)))
        .unwrap();
    h.set_value("A", regf::Value::binary("big", &pattern(20_000, 10)))
        .unwrap();
    for i in 0..600 {
        h.create_key(&format!("Many\\k{i:03}"), 0x01D0_0000_0000_0000)
            .unwrap();
    }
    h.to_bytes().unwrap()
}

/// The catalogue: (name, hostile bytes, text the strict error must contain).
fn hostile_cases() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let base = hostile_base();
    let a = nk_at(&base, "A");
    let c = nk_at(&base, "A\\B\\C");
    let many = nk_at(&base, "Many");
    let root = nk_at(&base, "");
    let values = 4096 + get32(&base, a + 40) as usize + 4;
    let vk = |i: usize| 4096 + get32(&base, values + 4 * i) as usize + 4;
    let mut cases = Vec::new();
    let mut case = |name, expect, f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = base.clone();
        f(&mut b);
        cases.push((name, b, expect));
    };
    case("bad_checksum", "checksum", &|b| b[0x30] ^= 0xFF);
    case("dirty_without_logs", "dirty", &|b| {
        put32(b, 4, 2);
        fix_checksum(b);
    });
    case("hbins_size_overflow", "truncated", &|b| {
        put32(b, 40, 0xFFFF_F000);
        fix_checksum(b);
    });
    case("truncated_hbin", "truncated", &|b| {
        b.truncate(4096 + 4096 + 100)
    });
    case("bad_hbin_signature", "expected \"hbin\"", &|b| {
        b[4096 + 4096..4096 + 4100].fill(0)
    });
    case("cell_out_of_bounds", "outside the hive bins data", &|b| {
        put32(b, a + 40, 0x7FFF_FFF0)
    });
    case("cell_size_overflow", "runs past", &|b| {
        put32(b, a - 4, 0x8000_0000)
    });
    case("subkey_list_loop_to_ancestor", "referenced twice", &|b| {
        put32(b, c + 20, 2); // the root has A and Many
        let root_list = get32(b, root + 28);
        put32(b, c + 28, root_list);
    });
    case("subkey_list_self_loop", "referenced twice", &|b| {
        let list = 4096 + get32(b, a + 28) as usize + 4;
        put32(b, list + 4, (a - 4096 - 4) as u32);
    });
    case(
        "index_root_in_index_root",
        "index root points to another index root",
        &|b| {
            let ri = get32(b, many + 28);
            put32(b, 4096 + ri as usize + 4 + 4, ri);
        },
    );
    case("value_count_overflow", "do not fit", &|b| {
        put32(b, a + 36, 0xFFFF_FFFF)
    });
    case("subkey_count_overflow", "do not fit", &|b| {
        let list = 4096 + get32(b, a + 28) as usize + 4;
        b[list + 2..list + 4].copy_from_slice(&0xFFFFu16.to_le_bytes());
    });
    case("key_name_length_overflow", "exceeds", &|b| {
        b[a + 72..a + 74].copy_from_slice(&[0xFF, 0xFF])
    });
    case("value_data_size_overflow", "exceeds", &|b| {
        put32(b, vk(1) + 4, 0x7FFF_FFFF)
    });
    case("big_data_segment_count_overflow", "do not fit", &|b| {
        let db = 4096 + get32(b, vk(2) + 8) as usize + 4;
        b[db + 2..db + 4].copy_from_slice(&0xFFFFu16.to_le_bytes());
    });
    case("inline_data_too_long", "at most 4", &|b| {
        put32(b, vk(0) + 4, 0x8000_0008)
    });
    case("unsorted_subkeys", "not sorted", &|b| {
        let ri = 4096 + get32(b, many + 28) as usize + 4;
        let leaf = 4096 + get32(b, ri + 4) as usize + 4;
        let (x, y) = (get32(b, leaf + 4), get32(b, leaf + 12));
        put32(b, leaf + 4, y);
        put32(b, leaf + 12, x);
    });
    cases
}

/// Every hostile case: a one-line error naming the problem when strict, no panic when
/// lenient (an error or a partial tree with warnings).
#[test]
fn hostile_catalogue_gives_clear_errors() {
    let readme = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile/regf/README.md"),
    )
    .unwrap();
    let cases = hostile_cases();
    for line in readme.lines().filter(|l| l.starts_with("| `")) {
        let name = line.split('`').nth(1).unwrap();
        assert!(
            cases.iter().any(|c| c.0 == name),
            "README case {name} is not generated"
        );
    }
    for (name, bytes, expect) in cases {
        assert!(
            readme.contains(&format!("`{name}`")),
            "{name} is missing from the README"
        );
        let e = Hive::parse(&bytes)
            .err()
            .unwrap_or_else(|| panic!("{name}: parsed without error"));
        let msg = e.to_string();
        assert!(msg.contains(expect), "{name}: {msg}");
        assert!(!msg.contains('\n') && msg.contains("0x"), "{name}: {msg}");
        let io: std::io::Error = e.into();
        assert_eq!(io.kind(), std::io::ErrorKind::InvalidData);
        if let Ok(h) = Hive::parse_with(&bytes, &lenient()) {
            let _ = export_reg(&h, None).unwrap();
            let _ = h.to_bytes();
        }
    }
    // The damaged SYSTEM hive of the fixtures: a clear error, or a partial tree.
    let damaged = common::read(&fixture("corrupted_system_hive"));
    let e = Hive::parse(&damaged).unwrap_err().to_string();
    assert!(e.contains("hive bin") && e.contains("0x"), "{e}");
    let partial = Hive::parse_with(&damaged, &lenient()).unwrap();
    assert!(partial.root.count_keys() > 1000 && !partial.warnings.is_empty());

    // Transaction logs whose entries fail their hashes do not apply.
    let primary = common::read(&fixture("transactions_NTUSER.DAT"));
    let mut logs = Vec::new();
    for l in [
        "transactions_ntuser.dat.log1",
        "transactions_ntuser.dat.log2",
    ] {
        let mut b = common::read(&fixture(l));
        b[512 + 24] ^= 1; // Hash-1 of the first entry
        logs.push(b);
    }
    let e = regf::recover(&primary, &[&logs[0], &logs[1]])
        .unwrap_err()
        .to_string();
    assert!(e.contains("no valid log entry"), "{e}");
}

/// Deterministic mutation replay over real hives, a hive of ours and a transaction log:
/// whatever the bytes, parsing, exporting and writing return instead of panicking.
#[test]
fn mutation_replay_never_panics() {
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    const INTERESTING: [u32; 8] = [
        0,
        1,
        0x20,
        0x7FFF_FFFF,
        0x8000_0000,
        0x8000_0004,
        0xFFFF_FFF8,
        0xFFFF_FFFF,
    ];
    let inputs = [
        common::read(&fixture("BCD")),
        common::read(&fixture("SAM")),
        hostile_base(),
    ];
    let mut parsed = 0;
    for input in &inputs {
        for _ in 0..250 {
            let mut b = input.clone();
            for _ in 0..1 + next() % 6 {
                let r = next();
                let at = if r % 8 == 0 {
                    (r >> 8) as usize % 512
                } else {
                    4096 + (r >> 8) as usize % (b.len() - 4096)
                };
                match r % 3 {
                    0 => b[at] = (r >> 40) as u8,
                    1 if at + 4 <= b.len() => {
                        put32(&mut b, at & !3, INTERESTING[(r >> 40) as usize % 8])
                    }
                    _ => b[at] ^= 1 << ((r >> 40) % 8),
                }
            }
            if next() % 16 == 0 {
                let n = next() as usize % b.len();
                b.truncate(n);
            }
            if next() % 2 == 0 && b.len() >= 512 {
                fix_checksum(&mut b);
            }
            let _ = Hive::parse(&b);
            if let Ok(h) = Hive::parse_with(&b, &lenient()) {
                parsed += 1;
                let _ = export_reg(&h, None);
                let _ = h.to_bytes();
            }
        }
    }
    assert!(
        parsed > 100,
        "mutations should mostly stay readable leniently ({parsed})"
    );
    let primary = common::read(&fixture("transactions_NTUSER.DAT"));
    let log = common::read(&fixture("transactions_ntuser.dat.log2"));
    for _ in 0..40 {
        let mut l = log.clone();
        for _ in 0..1 + next() % 4 {
            let r = next();
            let at = (r >> 8) as usize % l.len().min(8192);
            put32(&mut l, at & !3, INTERESTING[(r >> 40) as usize % 8]);
        }
        if let Ok(rec) = regf::recover(&primary, &[&l]) {
            let _ = Hive::parse_with(&rec.data, &lenient());
        }
    }
    // .reg text: mutated characters and cut lines give a result or an error.
    let text: Vec<char> = corpus_reg(3).chars().take(4000).collect();
    let alphabet: Vec<char> = "[]\\\"=@-:(),;\r\n hex(7)dword0fé".chars().collect();
    for _ in 0..300 {
        let mut t = text.clone();
        for _ in 0..1 + next() % 5 {
            let r = next();
            let at = (r >> 8) as usize % t.len();
            t[at] = alphabet[(r >> 40) as usize % alphabet.len()];
        }
        let t: String = t.into_iter().collect();
        let mut h = Hive::new_empty("R", 1);
        if merge_reg(&mut h, &t).is_ok() {
            let _ = export_reg(&h, None).unwrap();
            let _ = h.to_bytes();
        }
    }
}

/// Our name hash and ordering agree with Windows': every hash leaf entry in hives Windows
/// wrote (tens of thousands, a few with non-ASCII Latin-1 names) carries the hash
/// `lh_hash` computes for the key's name, and entries are in the order our comparison
/// gives.
#[test]
fn name_hashes_and_order_match_windows() {
    let (mut checked, mut nonascii) = (0, 0);
    let ntuser = regf::recover(
        &common::read(&fixture("transactions_NTUSER.DAT")),
        &[
            &common::read(&fixture("transactions_ntuser.dat.log1")),
            &common::read(&fixture("transactions_ntuser.dat.log2")),
        ],
    )
    .unwrap()
    .data;
    for name in [
        "SYSTEM",
        "SYSTEM_WIN_10_1709",
        "amcache.hve",
        "UsrClass.dat",
        "transactions_NTUSER.DAT",
    ] {
        let b = if name.starts_with("transactions") {
            ntuser.clone()
        } else {
            common::read(&fixture(name))
        };
        let bins_size = get32(&b, 40) as usize;
        let mut names: BTreeMap<u32, String> = BTreeMap::new();
        let mut leaves: Vec<Vec<(u32, u32)>> = Vec::new();
        let mut off = 0usize;
        while off < bins_size {
            let bin = regf::HiveBin::parse(&b, 4096 + off, off as u32).unwrap();
            let end = off + bin.size as usize;
            let mut c = off + 32;
            while c < end {
                let size = i32::from_le_bytes(b[4096 + c..4096 + c + 4].try_into().unwrap());
                let data = &b[4096 + c + 4..4096 + c + size.unsigned_abs() as usize];
                if size < 0 && &data[0..2] == b"nk" {
                    let nk = regf::KeyNode::parse(data, 0).unwrap();
                    let n = if nk.flags & regf::key_flags::COMP_NAME != 0 {
                        nk.key_name.iter().map(|&x| x as char).collect()
                    } else {
                        let u: Vec<u16> = nk
                            .key_name
                            .chunks(2)
                            .map(|p| u16::from_le_bytes([p[0], p[1]]))
                            .collect();
                        String::from_utf16_lossy(&u)
                    };
                    names.insert(c as u32, n);
                } else if size < 0 && &data[0..2] == b"lh" {
                    let n = u16::from_le_bytes([data[2], data[3]]) as usize;
                    leaves.push(
                        (0..n)
                            .map(|i| (get32(data, 4 + 8 * i), get32(data, 8 + 8 * i)))
                            .collect(),
                    );
                }
                c += size.unsigned_abs() as usize;
            }
            off = end;
        }
        for leaf in &leaves {
            // Free (stale) leaves may point anywhere; check those whose keys all exist.
            let Some(ns) = leaf
                .iter()
                .map(|(o, _)| names.get(o))
                .collect::<Option<Vec<_>>>()
            else {
                continue;
            };
            for ((_, h), n) in leaf.iter().zip(&ns) {
                assert_eq!(*h, regf::lh_hash(n), "{name}: hash of '{n}'");
                checked += 1;
                nonascii += usize::from(!n.is_ascii());
            }
            for w in ns.windows(2) {
                let up = |s: &str| s.encode_utf16().map(regf::upcase_unit).collect::<Vec<_>>();
                assert!(up(w[0]) < up(w[1]), "{name}: '{}' before '{}'", w[0], w[1]);
            }
        }
    }
    assert!(checked > 30_000, "only {checked} hashes checked");
    assert!(nonascii > 0, "no non-ASCII name among them");
}
