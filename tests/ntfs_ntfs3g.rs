//! The NTFS writer checked by independent readers: ntfs-3g's ntfsfix, ntfsls, ntfscat and
//! ntfsinfo, and wimlib-imagex capturing the volume through libntfs-3g.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nanoforge::core::WriteAt;
use nanoforge::formats::ntfs::{default_descriptor, write_volume, NtfsOptions, NtfsReport};
use nanoforge::tree::{
    host::symlink_reparse, Content, Meta, NameSpace, NodeId, Reparse, Stream, Tree,
};

/// A plain file as a write target.
struct FileDisk(File, u64);

impl WriteAt for FileDisk {
    fn size(&self) -> u64 {
        self.1
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        nanoforge::core::block::check_range(offset, data.len(), self.1)?;
        self.0.write_all_at(data, offset)
    }
    fn finish(self: Box<Self>) -> io::Result<()> {
        self.0.sync_all()
    }
}

const T: u64 = 133_000_000_000_000_000;

fn opts(size: u64) -> NtfsOptions {
    NtfsOptions {
        size,
        serial: 0x1234_5678_9ABC_DEF0,
        label: "Nano".into(),
        time: T,
        ..NtfsOptions::default()
    }
}

fn write_image(dir: &Path, name: &str, tree: &Tree, o: &NtfsOptions) -> (PathBuf, NtfsReport) {
    let p = dir.join(name);
    let f = File::create(&p).unwrap();
    f.set_len(o.size).unwrap();
    let mut d = FileDisk(f, o.size);
    let r = write_volume(tree, o, &mut d, 0).unwrap();
    (p, r)
}

fn ntfsfix_clean(img: &Path) {
    let out = common::run(common::tool("ntfsfix").arg("-n").arg(img));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "ntfsfix -n failed:\n{text}");
    assert!(
        !text.contains("FAILED") && !text.to_lowercase().contains("corrupt"),
        "ntfsfix -n:\n{text}"
    );
}

fn cat(img: &Path, path: &str) -> Vec<u8> {
    let out = common::run(common::tool("ntfscat").arg(img).arg(path));
    assert!(
        out.status.success(),
        "ntfscat {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `ntfsls -R` as directory → names.
fn ls_recursive(img: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let out = common::run_ok(common::tool("ntfsls").arg("-R").arg(img));
    let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut cur = String::new();
    for line in out.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(d) = line.strip_suffix(':').filter(|d| d.starts_with('/')) {
            cur = d.to_string();
            map.entry(cur.clone()).or_default();
        } else if line != "." && line != ".." {
            map.entry(cur.clone()).or_default().insert(line.to_string());
        }
    }
    map
}

/// Compare listings, reporting only the differences.
fn assert_same_listing(
    got: &BTreeMap<String, BTreeSet<String>>,
    want: &BTreeMap<String, BTreeSet<String>>,
) {
    let dirs: BTreeSet<&String> = got.keys().chain(want.keys()).collect();
    let empty = BTreeSet::new();
    let mut diffs = Vec::new();
    for d in dirs {
        let g = got.get(d).unwrap_or(&empty);
        let w = want.get(d).unwrap_or(&empty);
        for extra in g.difference(w).take(5) {
            diffs.push(format!("{d}: unexpected {extra:?}"));
        }
        for missing in w.difference(g).take(5) {
            diffs.push(format!("{d}: missing {missing:?}"));
        }
    }
    assert!(diffs.is_empty(), "listing differs:\n{}", diffs.join("\n"));
}

fn path_str(tree: &Tree, id: NodeId) -> String {
    tree.path_of(id).replace('\\', "/")
}

/// The listing the tree should produce: every directory's long names.
fn expected_listing(tree: &Tree) -> BTreeMap<String, BTreeSet<String>> {
    let mut map = BTreeMap::new();
    for (id, n) in tree.nodes().filter(|(_, n)| n.is_dir) {
        let names: BTreeSet<String> = n
            .entries()
            .filter(|(_, e)| e.space != NameSpace::Dos)
            .map(|(name, _)| String::from_utf16(name).unwrap())
            .collect();
        map.insert(path_str(tree, id), names);
    }
    map
}

fn sd(owner_rid: u32, mask: u32) -> Vec<u8> {
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

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

const CLUSTER: usize = 4096;

/// The fixture: every feature the writer supports, in one tree.
fn fixture() -> Tree {
    let mut t = Tree::new(Meta::at(T));
    t.set_case_sensitive(true);
    let sd_a = t.add_security(&sd(544, 0x1F01FF)).unwrap();
    let sd_b = t.add_security(&sd(545, 0x120089)).unwrap();
    let m = |sec| Meta {
        attributes: 0x20,
        security: Some(sec),
        ..Meta::at(T + 1)
    };
    // A directory with 20,000 empty files.
    let many = t.add_dir(Tree::ROOT, "many", m(sd_a)).unwrap();
    for i in 0..20_000 {
        t.add_file(many, &format!("entry {i:05}.dat"), m(sd_a), Content::Empty)
            .unwrap();
    }
    // Names that differ only in case, non-BMP and 255-unit names.
    let names = t.add_dir(Tree::ROOT, "names", m(sd_b)).unwrap();
    for n in [
        "readme",
        "README",
        "ReadMe",
        "ÄÖÜ",
        "äöü",
        "😀 smile 𝄞",
        "日本語のファイル",
    ] {
        t.add_file(names, n, m(sd_b), Content::bytes(n.as_bytes().to_vec()))
            .unwrap();
    }
    t.add_file(
        names,
        &"L".repeat(255),
        m(sd_b),
        Content::bytes(b"long".to_vec()),
    )
    .unwrap();
    t.add_file(
        names,
        &"😀".repeat(127),
        m(sd_b),
        Content::bytes(b"astral".to_vec()),
    )
    .unwrap();
    // Deep path.
    let mut d = Tree::ROOT;
    for level in 0..40 {
        d = t.add_dir(d, &format!("level{level:02}"), m(sd_a)).unwrap();
    }
    t.add_file(d, "bottom.txt", m(sd_a), Content::bytes(b"deep".to_vec()))
        .unwrap();
    // Sizes around the cluster and resident limits.
    let sizes = t.add_dir(Tree::ROOT, "sizes", m(sd_a)).unwrap();
    for len in [
        0usize,
        1,
        700,
        701,
        CLUSTER - 1,
        CLUSTER,
        CLUSTER + 1,
        3 * CLUSTER,
        1 << 20,
    ] {
        t.add_file(
            sizes,
            &format!("{len}.bin"),
            m(sd_a),
            Content::bytes(pattern(len, len as u32)),
        )
        .unwrap();
    }
    // Sparse: 4 MiB with two data islands.
    let mut sp = vec![0u8; 4 << 20];
    sp[100_000..100_100].copy_from_slice(&pattern(100, 1));
    sp[3_000_000..3_010_000].copy_from_slice(&pattern(10_000, 2));
    let sparse = Stream {
        content: Content::bytes(sp),
        sparse: Some(vec![100_000..100_100, 3_000_000..3_010_000]),
    };
    t.add_file(sizes, "sparse.bin", m(sd_a), sparse).unwrap();
    // 200 hard links to one file, in two directories (its names overflow one record).
    let links = t.add_dir(Tree::ROOT, "links", m(sd_a)).unwrap();
    let other = t.add_dir(Tree::ROOT, "links2", m(sd_a)).unwrap();
    let target = t
        .add_file(
            links,
            "target.txt",
            m(sd_b),
            Content::bytes(b"linked".to_vec()),
        )
        .unwrap();
    for i in 1..200 {
        let dir = if i % 2 == 0 { links } else { other };
        t.add_hard_link(target, dir, &format!("link {i:03}.txt"), None)
            .unwrap();
    }
    // Named streams: many small ones, overflowing the record, and a large one.
    let streams = t.add_dir(Tree::ROOT, "streams", m(sd_a)).unwrap();
    let s = t
        .add_file(
            streams,
            "many.txt",
            m(sd_a),
            Content::bytes(b"main".to_vec()),
        )
        .unwrap();
    for i in 0..60 {
        t.add_stream(s, &format!("stream{i:02}"), Content::bytes(pattern(300, i)))
            .unwrap();
    }
    let s = t
        .add_file(
            streams,
            "zone.exe",
            m(sd_a),
            Content::bytes(pattern(5000, 9)),
        )
        .unwrap();
    t.add_stream(
        s,
        "Zone.Identifier",
        Content::bytes(b"[ZoneTransfer]\r\nZoneId=3\r\n".to_vec()),
    )
    .unwrap();
    t.add_stream(s, "big", Content::bytes(pattern(200_000, 10)))
        .unwrap();
    // DOS names, paired and collapsed.
    let pf = t
        .add_with_dos_name(Tree::ROOT, "Program Files", "PROGRA~1", true, m(sd_a))
        .unwrap();
    t.add_with_dos_name(
        pf,
        "Long Application Name.exe",
        "LONGAP~1.EXE",
        false,
        m(sd_a),
    )
    .unwrap();
    t.add_with_dos_name(pf, "SHORT.TXT", "SHORT.TXT", false, m(sd_a))
        .unwrap();
    // Reparse points and an object id.
    let mut rm = m(sd_a);
    rm.reparse = Some(symlink_reparse("sizes\\1.bin", true));
    t.add_file(Tree::ROOT, "symlink", rm, Content::Empty)
        .unwrap();
    let mut rm = m(sd_a);
    let mut tagdata = vec![0x11u8; 16];
    tagdata.extend_from_slice(b"third-party reparse data");
    rm.reparse = Some(Reparse {
        tag: 0x0000_1234,
        data: tagdata,
    });
    t.add_dir(Tree::ROOT, "junctionish", rm).unwrap();
    let mut om = m(sd_b);
    om.object_id = Some(*b"0123456789abcdef");
    t.add_file(
        Tree::ROOT,
        "with-object-id",
        om,
        Content::bytes(b"oid".to_vec()),
    )
    .unwrap();
    // A file with no descriptor of its own.
    t.add_file(
        Tree::ROOT,
        "default-sd",
        Meta::at(T),
        Content::bytes(b"d".to_vec()),
    )
    .unwrap();
    t
}

/// Files (path, stream name, bytes) to read back with ntfscat.
fn contents(tree: &Tree) -> Vec<(String, Option<String>, Vec<u8>)> {
    let mut out = Vec::new();
    for (id, n) in tree.nodes() {
        if n.is_dir || n.links.is_empty() {
            continue;
        }
        let p = path_str(tree, id);
        if !n.data.content.is_empty() {
            out.push((p.clone(), None, n.data.content.read_all().unwrap()));
        }
        for (k, s) in &n.streams {
            out.push((p.clone(), Some(k.clone()), s.content.read_all().unwrap()));
        }
    }
    out
}

fn volume_opts() -> NtfsOptions {
    opts(96 << 20)
}

#[test]
fn fixture_is_clean_and_ntfs3g_reads_back_every_name_and_byte() {
    let tmp = common::tempdir();
    let tree = fixture();
    let (img, report) = write_image(tmp.path(), "f.img", &tree, &volume_opts());
    assert!(report.mft_records > 20_000);
    ntfsfix_clean(&img);
    assert_same_listing(&ls_recursive(&img), &expected_listing(&tree));
    for (path, stream, bytes) in contents(&tree) {
        let mut c = common::tool("ntfscat");
        if let Some(s) = &stream {
            c.arg("-a").arg("0x80").arg("-n").arg(s);
        }
        let out = common::run(c.arg(&img).arg(&path));
        assert!(
            out.status.success(),
            "ntfscat {path} {stream:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout == bytes,
            "{path} {stream:?}: {} bytes read, {} expected",
            out.stdout.len(),
            bytes.len()
        );
    }
}

fn ntfsinfo(img: &Path, path: &str) -> String {
    common::run_ok(common::tool("ntfsinfo").arg("-F").arg(path).arg(img))
}

#[test]
fn ntfsinfo_shows_link_counts_attributes_and_name_spaces() {
    let tmp = common::tempdir();
    let tree = fixture();
    let (img, _) = write_image(tmp.path(), "i.img", &tree, &volume_opts());
    let info = ntfsinfo(&img, "/links/target.txt");
    assert!(
        info.contains("Number of Hard Links:\t 200 (0xc8)"),
        "{info}"
    );
    assert!(info.contains("$ATTRIBUTE_LIST"), "{info}");
    let info = ntfsinfo(&img, "/Program Files/Long Application Name.exe");
    assert!(info.contains("Number of Hard Links:\t 2 (0x2)"), "{info}");
    assert!(
        info.contains("Namespace:\t\t Win32\n") && info.contains("Namespace:\t\t DOS\n"),
        "{info}"
    );
    assert!(info.contains("'LONGAP~1.EXE'"), "{info}");
    let info = ntfsinfo(&img, "/Program Files/SHORT.TXT");
    assert!(info.contains("Namespace:\t\t Win32 & DOS"), "{info}");
    let info = ntfsinfo(&img, "/sizes/sparse.bin");
    assert!(info.contains("SPARSE"), "{info}");
    let info = ntfsinfo(&img, "/symlink");
    assert!(
        info.contains("REPARSE_POINT") && info.contains("$REPARSE_POINT"),
        "{info}"
    );
    let info = ntfsinfo(&img, "/with-object-id");
    assert!(info.contains("$OBJECT_ID"), "{info}");
    let info = ntfsinfo(&img, "/sizes/4096.bin");
    assert!(info.contains("Allocated size:\t\t 4096 (0x1000)"), "{info}");
    let info = ntfsinfo(&img, "/streams/many.txt");
    assert!(
        info.contains("$ATTRIBUTE_LIST") && info.contains("'stream59'"),
        "{info}"
    );
}

/// `wimlib-imagex dir --detailed` parsed as path → (field → value) plus stream names.
fn wim_detailed(wim: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let out = common::run_ok(
        common::tool("wimlib-imagex")
            .arg("dir")
            .arg(wim)
            .arg("1")
            .arg("--detailed"),
    );
    let mut map: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut cur: Option<String> = None;
    for line in out.lines() {
        if let Some(p) = line.strip_prefix("Full Path           = ") {
            let p = p.trim_matches('"').to_string();
            map.entry(p.clone()).or_default();
            cur = Some(p);
            continue;
        }
        let Some(c) = &cur else { continue };
        let e = map.get_mut(c).unwrap();
        if let Some(n) = line.trim().strip_prefix("Named data stream \"") {
            let n = n.trim_end_matches("\":");
            let streams = e.entry("streams".into()).or_default();
            let mut all: BTreeSet<String> = streams
                .split('|')
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect();
            all.insert(n.to_string());
            *streams = all.into_iter().map(|x| format!("{x}|")).collect();
        } else if let Some((k, v)) = line.split_once(" = ") {
            e.entry(k.trim().to_string())
                .or_insert_with(|| v.trim().to_string());
        }
    }
    map
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn wimlib_capture_sees_descriptors_streams_reparse_links_and_short_names() {
    let tmp = common::tempdir();
    let tree = fixture();
    let (img, _) = write_image(tmp.path(), "w.img", &tree, &volume_opts());
    let wim = tmp.path().join("x.wim");
    common::run_ok(
        common::tool("wimlib-imagex")
            .arg("capture")
            .arg(&img)
            .arg(&wim)
            .arg("--compress=none"),
    );
    let d = wim_detailed(&wim);
    let sds = tree.security_descriptors();
    for (id, n) in tree.nodes().filter(|(id, _)| id.0 != 0) {
        let p = path_str(&tree, id);
        let e = d
            .get(&p)
            .unwrap_or_else(|| panic!("{p} missing from the WIM"));
        let want_sd = match n.meta.security {
            Some(s) => hex(&sds[s.0 as usize]),
            None => hex(&default_descriptor()),
        };
        assert_eq!(e.get("Security Descriptor"), Some(&want_sd), "{p}");
        if let Some(r) = &n.meta.reparse {
            assert_eq!(e.get("Reparse Tag"), Some(&format!("{:#x}", r.tag)), "{p}");
        }
        let want_streams: String = n.streams.keys().map(|k| format!("{k}|")).collect();
        assert_eq!(
            e.get("streams").cloned().unwrap_or_default(),
            want_streams,
            "{p}"
        );
        let names: usize = n
            .links
            .iter()
            .map(|l| 1 + usize::from(l.dos_name.is_some() && l.spaces().len() == 2))
            .sum();
        if !n.is_dir {
            assert_eq!(
                e.get("Link Count"),
                Some(&n.links.len().to_string()),
                "{p} ({names} names)"
            );
        }
        if let Some(oid) = n.meta.object_id {
            assert_eq!(e.get("Object ID"), Some(&format!("0x{}", hex(&oid))), "{p}");
        }
    }
    assert_eq!(
        d["/Program Files"].get("Short Name").map(String::as_str),
        Some("\"PROGRA~1\"")
    );
    assert_eq!(
        d["/Program Files/Long Application Name.exe"]
            .get("Short Name")
            .map(String::as_str),
        Some("\"LONGAP~1.EXE\"")
    );
    let a = &d["/links/target.txt"]["Link Group ID"];
    assert_ne!(a, "0x0000000000000000");
    assert_eq!(&d["/links2/link 001.txt"]["Link Group ID"], a);
}

#[test]
fn same_tree_gives_identical_bytes() {
    let tmp = common::tempdir();
    let tree = fixture();
    let (a, _) = write_image(tmp.path(), "a.img", &tree, &volume_opts());
    let (b, _) = write_image(tmp.path(), "b.img", &tree, &volume_opts());
    assert!(
        common::read(&a) == common::read(&b),
        "two writes of one tree differ"
    );
}

#[test]
fn cluster_and_sector_sizes() {
    let tmp = common::tempdir();
    let mut t = Tree::new(Meta::at(T));
    let d = t.add_dir(Tree::ROOT, "dir", Meta::at(T)).unwrap();
    let data = pattern(200_000, 5);
    for i in 0..300 {
        t.add_file(
            d,
            &format!("file{i}"),
            Meta::at(T),
            Content::bytes(data[..i * 10].to_vec()),
        )
        .unwrap();
    }
    t.add_file(Tree::ROOT, "big", Meta::at(T), Content::bytes(data.clone()))
        .unwrap();
    for (cluster, sector) in [
        (512u32, 512u32),
        (1024, 512),
        (8192, 512),
        (65536, 512),
        (4096, 4096),
    ] {
        let o = NtfsOptions {
            cluster_size: cluster,
            sector_size: sector,
            hidden_sectors: 2048,
            ..opts(48 << 20)
        };
        let (img, _) = write_image(tmp.path(), &format!("c{cluster}-{sector}.img"), &t, &o);
        ntfsfix_clean(&img);
        assert_same_listing(&ls_recursive(&img), &expected_listing(&t));
        assert_eq!(cat(&img, "/big"), data, "cluster {cluster}");
        assert_eq!(
            cat(&img, "/dir/file299"),
            &data[..2990],
            "cluster {cluster}"
        );
    }
}
