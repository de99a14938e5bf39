//! The NTFS writer checked by independent readers: ntfs-3g's ntfsfix, ntfsls, ntfscat and
//! ntfsinfo, and wimlib-imagex capturing the volume through libntfs-3g.

mod common;
use common::FileDisk;

use common::{scrambled as pattern, test_sd as sd};

use std::collections::{BTreeMap, BTreeSet};

use sha1::Digest;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use nanoforge::formats::ntfs::{default_descriptor, write_volume, NtfsOptions, NtfsReport};
use nanoforge::tree::{
    host::symlink_reparse, Content, Meta, NameSpace, NodeId, Reparse, Stream, Tree,
};

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

/// The volume is clean for ntfs-3g: `ntfsfix -n` finds nothing to fix, and ntfsresize's
/// consistency check (which walks every record and compares the clusters they use with
/// $Bitmap bit by bit) passes.
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
    let out = common::run(
        common::tool("ntfsresize")
            .args(["--info", "--force", "--no-progress-bar"])
            .arg(img),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "ntfsresize --info failed:\n{text}");
    assert!(
        text.contains("Accounting clusters") && !text.contains("ERROR") && !text.contains("failed"),
        "ntfsresize --info:\n{text}"
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
    for i in 1..200u32 {
        let dir = if i.is_multiple_of(2) { links } else { other };
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
    // $Extend indexes: one entry per reparse point and per object id, plus the END entry.
    let reparse_points = tree
        .nodes()
        .filter(|(_, n)| n.meta.reparse.is_some())
        .count();
    let info = ntfsinfo(&img, "/$Extend/$Reparse");
    assert!(
        info.contains(&format!("Index entries total:\t {}\n", reparse_points + 1)),
        "{info}"
    );
    let object_ids = tree
        .nodes()
        .filter(|(_, n)| n.meta.object_id.is_some())
        .count();
    let info = ntfsinfo(&img, "/$Extend/$ObjId");
    assert!(
        info.contains(&format!("Index entries total:\t {}\n", object_ids + 1)),
        "{info}"
    );
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
    // Fields after a stream heading are keyed "<stream>/<field>", e.g. "reparse/Hash".
    let mut section = String::new();
    for line in out.lines() {
        if let Some(p) = line.strip_prefix("Full Path           = ") {
            let p = p.trim_matches('"').to_string();
            map.entry(p.clone()).or_default();
            cur = Some(p);
            section.clear();
            continue;
        }
        let Some(c) = &cur else { continue };
        let e = map.get_mut(c).unwrap();
        let t = line.trim();
        if t == "Unnamed data stream:" {
            section = "data".into();
        } else if t == "Reparse point stream:" {
            section = "reparse".into();
        }
        if let Some(n) = t.strip_prefix("Named data stream \"") {
            section = format!("stream {}", n.trim_end_matches("\":"));
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
            let k = if section.is_empty() {
                k.trim().to_string()
            } else {
                format!("{section}/{}", k.trim())
            };
            e.entry(k).or_insert_with(|| v.trim().to_string());
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
            // wimlib stores the reparse data after the 8-byte header as a stream.
            assert_eq!(
                e.get("reparse/Uncompressed size"),
                Some(&format!("{} bytes", r.data.len())),
                "{p}"
            );
            assert_eq!(
                e.get("reparse/Hash"),
                Some(&format!("0x{}", hex(&sha1::Sha1::digest(&r.data)))),
                "{p}"
            );
        }
        for (k, st) in &n.streams {
            let data = st.content.read_all().unwrap();
            assert_eq!(
                e.get(&format!("stream {k}/Hash")),
                Some(&format!("0x{}", hex(&sha1::Sha1::digest(&data)))),
                "{p}:{k}"
            );
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
    let (a, report) = write_image(tmp.path(), "a.img", &tree, &volume_opts());
    let (b, _) = write_image(tmp.path(), "b.img", &tree, &volume_opts());
    let a = common::read(&a);
    assert!(a == common::read(&b), "two writes of one tree differ");
    // A target full of garbage, and another prefetch setting: every byte the volume uses
    // is still the same (nothing relies on the target being zeroed).
    let o = NtfsOptions {
        prefetch_threads: 1,
        prefetch_bytes: 1,
        ..volume_opts()
    };
    let p = tmp.path().join("c.img");
    std::fs::write(&p, vec![0xA5u8; o.size as usize]).unwrap();
    let mut d = FileDisk(File::options().write(true).open(&p).unwrap(), o.size);
    write_volume(&tree, &o, &mut d, 0).unwrap();
    let c = common::read(&p);
    let used = (report.used_clusters * u64::from(report.cluster_size)) as usize;
    assert!(
        a[..used] == c[..used],
        "bytes in use depend on the target's old contents"
    );
    assert_eq!(a[a.len() - 512..], c[c.len() - 512..]);
    ntfsfix_clean(&p);
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

/// A second reader: the pure-Rust `ntfs` crate walks every directory, reads every file and
/// finds names through the B+ trees (which only works if our entries are in collation order).
#[test]
fn ntfs_crate_walks_the_volume_and_reads_every_file() {
    use ntfs::indexes::NtfsFileNameIndex;
    use ntfs::structured_values::NtfsFileNamespace;
    use std::io::Read;

    let tmp = common::tempdir();
    let tree = fixture();
    let (img, _) = write_image(tmp.path(), "n.img", &tree, &volume_opts());
    let mut f = io::BufReader::new(File::open(&img).unwrap());
    let mut fs = ntfs::Ntfs::new(&mut f).unwrap();
    fs.read_upcase_table(&mut f).unwrap();
    let want: BTreeMap<String, Vec<u8>> = contents(&tree)
        .into_iter()
        .filter(|(_, s, _)| s.is_none())
        .map(|(p, _, b)| (p, b))
        .collect();
    let mut listing: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut read = 0;
    let mut stack = vec![("/".to_string(), 5u64)];
    while let Some((path, rec)) = stack.pop() {
        let dir = fs.file(&mut f, rec).unwrap();
        let index = dir.directory_index(&mut f).unwrap();
        let mut it = index.entries();
        let names = listing.entry(path.clone()).or_default();
        while let Some(e) = it.next(&mut f) {
            let e = e.unwrap();
            let key = e.key().unwrap().unwrap();
            if key.namespace() == NtfsFileNamespace::Dos {
                continue;
            }
            let name = key.name().to_string_lossy();
            if path == "/" && (name == "." || name.starts_with('$')) {
                continue;
            }
            let child = if path == "/" {
                format!("/{name}")
            } else {
                format!("{path}/{name}")
            };
            let rec = e.file_reference().file_record_number();
            if key.is_directory() {
                stack.push((child, rec));
            } else if let Some(bytes) = want.get(&child) {
                let file = fs.file(&mut f, rec).unwrap();
                let item = file.data(&mut f, "").unwrap().unwrap();
                let attr = item.to_attribute().unwrap();
                let mut v = Vec::new();
                attr.value(&mut f)
                    .unwrap()
                    .attach(&mut f)
                    .read_to_end(&mut v)
                    .unwrap();
                assert!(
                    &v == bytes,
                    "{child}: {} bytes read, {} expected",
                    v.len(),
                    bytes.len()
                );
                read += 1;
            }
            names.insert(name);
        }
    }
    assert_eq!(read, want.len());
    assert_same_listing(&listing, &expected_listing(&tree));
    // Lookups through the B+ tree of the 20,000-entry directory, case-insensitively.
    let many = tree.lookup("many").unwrap();
    let many_rec = {
        let root = fs.root_directory(&mut f).unwrap();
        let index = root.directory_index(&mut f).unwrap();
        let mut finder = index.finder();
        let e = NtfsFileNameIndex::find(&mut finder, &fs, &mut f, "MANY")
            .unwrap()
            .unwrap();
        e.file_reference().file_record_number()
    };
    assert!(tree.node(many).is_dir);
    let dir = fs.file(&mut f, many_rec).unwrap();
    let index = dir.directory_index(&mut f).unwrap();
    for i in [0, 1, 4999, 10_000, 12_345, 19_999] {
        let mut finder = index.finder();
        let name = format!("ENTRY {i:05}.DAT");
        let e = NtfsFileNameIndex::find(&mut finder, &fs, &mut f, &name);
        let e = e.unwrap_or_else(|| panic!("{name} not found")).unwrap();
        let key = e.key().unwrap().unwrap();
        assert_eq!(key.name().to_string_lossy(), format!("entry {i:05}.dat"));
    }
    let mut finder = index.finder();
    assert!(NtfsFileNameIndex::find(&mut finder, &fs, &mut f, "entry 20000.dat").is_none());
}

/// Our metadata files against mkntfs' for the same geometry: $UpCase (and its $Info CRC),
/// $AttrDef, the $LogFile size and the boot sector geometry fields.
#[test]
fn metadata_matches_mkntfs() {
    let tmp = common::tempdir();
    let size = 64u64 << 20;
    let theirs = tmp.path().join("mkntfs.img");
    File::create(&theirs).unwrap().set_len(size).unwrap();
    common::run_ok(
        common::tool("mkntfs")
            .args([
                "-F", "-q", "-Q", "-c", "4096", "-s", "512", "-p", "0", "-L", "Nano",
            ])
            .arg(&theirs),
    );
    let tree = Tree::new(Meta::at(T));
    let (ours, _) = write_image(tmp.path(), "ours.img", &tree, &opts(size));
    ntfsfix_clean(&ours);
    for file in ["/$UpCase", "/$AttrDef"] {
        let a = cat(&ours, file);
        assert!(a == cat(&theirs, file), "{file} differs from mkntfs'");
        assert!(!a.is_empty());
    }
    let info = |img: &Path| {
        let out = common::run(
            common::tool("ntfscat")
                .args(["-a", "0x80", "-n", "$Info"])
                .arg(img)
                .arg("/$UpCase"),
        );
        assert!(out.status.success());
        out.stdout
    };
    assert_eq!(info(&ours), info(&theirs), "$UpCase:$Info");
    assert_eq!(
        cat(&ours, "/$LogFile").len(),
        cat(&theirs, "/$LogFile").len()
    );
    assert!(cat(&ours, "/$LogFile").iter().all(|&b| b == 0xFF));
    let a = common::read(&ours);
    let b = common::read(&theirs);
    for (what, range) in [
        ("OEM id", 3..11),
        ("bytes per sector, sectors per cluster", 0x0B..0x0E),
        ("reserved and FAT fields", 0x0E..0x15),
        ("media", 0x15..0x16),
        ("total sectors", 0x28..0x30),
        ("clusters per record, per index block", 0x40..0x45),
        ("signature", 0x1FE..0x200),
    ] {
        assert_eq!(&a[range.clone()], &b[range], "boot sector {what}");
    }
    assert_eq!(&a[..512], &a[a.len() - 512..], "backup boot sector");
    let label = common::run_ok(common::tool("ntfsinfo").arg("-m").arg(&ours));
    assert!(
        label.contains("Volume Name: Nano") && label.contains("Volume Version: 3.1"),
        "{label}"
    );
}

/// Bytes of blob `id`: deterministic, so a test can recompute them.
fn blob(id: u64, len: u64) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + id * 7) % 251) as u8).collect()
}

/// A content source standing in for a WIM reader, optionally lying about one blob's length.
struct Blobs {
    short: Option<u64>,
}

impl nanoforge::tree::ContentSource for Blobs {
    fn open(&self, id: u64) -> io::Result<Box<dyn io::Read + Send>> {
        let len = id * 977 % 300_000;
        let len = if self.short == Some(id) { len / 2 } else { len };
        Ok(Box::new(io::Cursor::new(blob(id, len))))
    }
}

fn source_tree(short: Option<u64>) -> Tree {
    let src: std::sync::Arc<dyn nanoforge::tree::ContentSource> =
        std::sync::Arc::new(Blobs { short });
    let mut t = Tree::new(Meta::at(T));
    let d = t.add_dir(Tree::ROOT, "blobs", Meta::at(T)).unwrap();
    for id in 1..400u64 {
        let c = Content::Source {
            source: src.clone(),
            id,
            len: id * 977 % 300_000,
        };
        t.add_file(d, &format!("blob{id:03}"), Meta::at(T), c)
            .unwrap();
    }
    t
}

#[test]
fn contents_from_a_source_are_prefetched_and_written_in_order() {
    let tmp = common::tempdir();
    let t = source_tree(None);
    let o = NtfsOptions {
        prefetch_threads: 3,
        prefetch_bytes: 1 << 20,
        ..opts(96 << 20)
    };
    let (img, _) = write_image(tmp.path(), "s.img", &t, &o);
    ntfsfix_clean(&img);
    for id in [1u64, 2, 77, 200, 307, 399] {
        assert!(
            cat(&img, &format!("/blobs/blob{id:03}")) == blob(id, id * 977 % 300_000),
            "blob {id}"
        );
    }
    let err = write_volume(
        &source_tree(Some(250)),
        &o,
        &mut nanoforge::core::MemDisk::new(o.size),
        0,
    )
    .unwrap_err();
    assert!(err.to_string().contains("blob250"), "{err}");
}

#[test]
fn hostile_trees_fail_before_anything_is_written() {
    use nanoforge::core::MemDisk;
    let mut t = Tree::new(Meta::at(T));
    for bad in ["a:b", "a/b", "a\\b", "nul\0", ""] {
        assert!(
            t.add_file(Tree::ROOT, bad, Meta::at(T), Content::Empty)
                .is_err(),
            "{bad:?}"
        );
    }
    assert!(t
        .add_file(Tree::ROOT, &"x".repeat(256), Meta::at(T), Content::Empty)
        .is_err());
    let mut huge = Meta::at(T);
    huge.reparse = Some(Reparse {
        tag: 0x8000_0017,
        data: vec![0; 16 * 1024],
    });
    assert!(t
        .add_file(Tree::ROOT, "r", huge.clone(), Content::Empty)
        .is_err());
    t.add_file(Tree::ROOT, "f", Meta::at(T), Content::Empty)
        .unwrap();
    assert!(t
        .add_file(Tree::ROOT, "F", Meta::at(T), Content::Empty)
        .is_err());

    let o = opts(32 << 20);
    let check = |t: &Tree, want: &str| {
        let mut disk = MemDisk::new(o.size);
        let err = write_volume(t, &o, &mut disk, 0).unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
        assert_eq!(
            disk.stored_bytes(),
            0,
            "bytes were written before the error: {err}"
        );
    };
    // Edits made in place are caught by the writer.
    let mut bad = t.clone();
    let f = bad.lookup("f").unwrap();
    bad.node_mut(f).links[0].name = "bad:name".encode_utf16().collect();
    check(&bad, "bad:name");
    let mut bad = t.clone();
    bad.node_mut(f).meta = huge;
    check(&bad, "reparse data");
    // More data than the volume holds.
    let mut big = t.clone();
    let src: std::sync::Arc<dyn nanoforge::tree::ContentSource> =
        std::sync::Arc::new(Blobs { short: None });
    big.add_file(
        Tree::ROOT,
        "huge",
        Meta::at(T),
        Content::Source {
            source: src,
            id: 1,
            len: 40 << 20,
        },
    )
    .unwrap();
    check(&big, "make the volume at least");
    // A name reserved for metadata files.
    let mut sys = t.clone();
    sys.add_file(Tree::ROOT, "$MFT", Meta::at(T), Content::Empty)
        .unwrap();
    check(&sys, "reserved");
    // Bad options.
    let mut disk = MemDisk::new(o.size);
    let e = write_volume(
        &t,
        &NtfsOptions {
            cluster_size: 3000,
            ..o.clone()
        },
        &mut disk,
        0,
    )
    .unwrap_err();
    assert!(e.to_string().contains("cluster size"), "{e}");
}

#[test]
fn host_folder_with_hard_and_symbolic_links() {
    use nanoforge::tree::host::HostOptions;
    let tmp = common::tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    std::fs::write(src.join("a.txt"), b"alpha").unwrap();
    std::fs::write(src.join("sub/b.bin"), pattern(70_000, 3)).unwrap();
    std::fs::write(src.join("sub/deeper/empty"), b"").unwrap();
    std::fs::hard_link(src.join("a.txt"), src.join("sub/a-link.txt")).unwrap();
    std::os::unix::fs::symlink("sub/b.bin", src.join("sym")).unwrap();
    let t = Tree::from_host_dir(
        &src,
        &HostOptions {
            time: T,
            symlinks: true,
            case_sensitive: false,
            windows_names: true,
        },
    )
    .unwrap();
    let (img, _) = write_image(tmp.path(), "h.img", &t, &opts(32 << 20));
    ntfsfix_clean(&img);
    assert_same_listing(&ls_recursive(&img), &expected_listing(&t));
    assert_eq!(cat(&img, "/sub/a-link.txt"), b"alpha");
    assert_eq!(cat(&img, "/sub/b.bin"), pattern(70_000, 3));
    assert!(ntfsinfo(&img, "/a.txt").contains("Number of Hard Links:\t 2 (0x2)"));
    assert!(ntfsinfo(&img, "/sym").contains("$REPARSE_POINT"));
    assert!(Tree::from_host_dir(
        &src,
        &HostOptions {
            time: T,
            symlinks: false,
            case_sensitive: false,
            windows_names: true,
        }
    )
    .is_err());
}

#[test]
fn grafted_base_image_lands_under_its_path() {
    let tmp = common::tempdir();
    let mut base = Tree::new(Meta::at(T));
    let w = base.add_dir(Tree::ROOT, "Windows", Meta::at(T)).unwrap();
    let f = base
        .add_file(
            w,
            "notepad.exe",
            Meta::at(T),
            Content::bytes(pattern(9000, 1)),
        )
        .unwrap();
    base.add_hard_link(f, Tree::ROOT, "notepad-link.exe", None)
        .unwrap();
    let mut host = Tree::new(Meta::at(T));
    host.add_dir(Tree::ROOT, "ProgramData", Meta::at(T))
        .unwrap();
    let at = "ProgramData\\Microsoft\\Windows\\Images\\CN=Test\\Files";
    host.graft(at, &base).unwrap();
    let err = host.graft(at, &base).unwrap_err().to_string();
    assert!(
        err.contains("already exists") && err.contains("Windows"),
        "{err}"
    );
    let (img, _) = write_image(tmp.path(), "g.img", &host, &opts(32 << 20));
    ntfsfix_clean(&img);
    let p = "/ProgramData/Microsoft/Windows/Images/CN=Test/Files";
    assert_eq!(
        cat(&img, &format!("{p}/Windows/notepad.exe")),
        pattern(9000, 1)
    );
    assert!(ntfsinfo(&img, &format!("{p}/notepad-link.exe"))
        .contains("Number of Hard Links:\t 2 (0x2)"));
}

/// libfsntfs, a third reader, lists every path and stream of the fixture.
#[test]
fn fsntfsinfo_lists_every_path_and_stream() {
    let tmp = common::tempdir();
    let tree = fixture();
    let (img, _) = write_image(tmp.path(), "l.img", &tree, &volume_opts());
    let out = common::run_ok(common::tool("fsntfsinfo").arg("-H").arg(&img));
    let got: BTreeSet<String> = out
        .lines()
        .skip_while(|l| !l.starts_with("File system hierarchy:"))
        .filter(|l| l.starts_with('\\') && !l.starts_with("\\$"))
        .map(str::to_string)
        .collect();
    let mut want = BTreeSet::new();
    for (_, n) in tree.nodes() {
        for l in &n.links {
            let parent = tree.path_of(l.parent);
            let sep = if parent == "\\" { "" } else { "\\" };
            let p = format!("{parent}{sep}{}", String::from_utf16(&l.name).unwrap());
            for k in n.streams.keys() {
                want.insert(format!("{p}:{k}"));
            }
            want.insert(p);
        }
    }
    // libfsntfs 20200921 decodes surrogate pairs wrongly (U+1F600 comes out as U+1F201;
    // ntfsls and the ntfs crate read them right), so names outside the BMP are left out here.
    let bmp = |p: &String| p.chars().all(|c| (c as u32) < 0x10000);
    let got: BTreeSet<String> = got.into_iter().filter(bmp).collect();
    let want: BTreeSet<String> = want.into_iter().filter(bmp).collect();
    let missing: Vec<_> = want.difference(&got).take(5).collect();
    let extra: Vec<_> = got.difference(&want).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, unexpected {extra:?}"
    );
    let entries = common::run(common::tool("fsntfsinfo").args(["-E", "all"]).arg(&img));
    let text = String::from_utf8_lossy(&entries.stdout).into_owned()
        + &String::from_utf8_lossy(&entries.stderr);
    assert!(
        entries.status.success() && !text.contains("Unable"),
        "{}",
        &text[text.len().saturating_sub(2000)..]
    );
}

/// A volume written at a partition offset holds the same bytes as one written at 0, and
/// nothing outside its range is touched.
#[test]
fn partition_offset_shifts_the_volume_only() {
    use nanoforge::core::{MemDisk, ReadAt};
    let mut t = Tree::new(Meta::at(T));
    t.add_file(
        Tree::ROOT,
        "f",
        Meta::at(T),
        Content::bytes(pattern(10_000, 4)),
    )
    .unwrap();
    let o = NtfsOptions {
        hidden_sectors: 2048,
        ..opts(8 << 20)
    };
    let mut a = MemDisk::new(o.size);
    write_volume(&t, &o, &mut a, 0).unwrap();
    let off = 1u64 << 20;
    let mut b = MemDisk::new(o.size + 2 * off);
    write_volume(&t, &o, &mut b, off).unwrap();
    let mut va = vec![0u8; o.size as usize];
    a.read_at(0, &mut va).unwrap();
    let mut vb = vec![0u8; o.size as usize];
    b.read_at(off, &mut vb).unwrap();
    assert!(va == vb);
    let ranges = b.data_ranges().unwrap();
    assert!(
        ranges
            .iter()
            .all(|r| r.start >= off && r.end <= off + o.size),
        "{ranges:?}"
    );
    assert_eq!(u32::from_le_bytes(va[0x1C..0x20].try_into().unwrap()), 2048);
    let mut small = MemDisk::new(o.size);
    assert!(write_volume(&t, &o, &mut small, 512).is_err());
}

/// Thousands of distinct descriptors: $SDS spills past its first 256 KiB block and $SDH and
/// $SII become large indexes; every file still gets its own descriptor back.
#[test]
fn many_security_descriptors() {
    let tmp = common::tempdir();
    let mut t = Tree::new(Meta::at(T));
    let d = t.add_dir(Tree::ROOT, "d", Meta::at(T)).unwrap();
    let mut want = Vec::new();
    for i in 0..3000u32 {
        let bytes = sd(1000 + i, 0x1F01FF);
        let id = t.add_security(&bytes).unwrap();
        let m = Meta {
            security: Some(id),
            ..Meta::at(T)
        };
        t.add_file(d, &format!("f{i:04}"), m, Content::Empty)
            .unwrap();
        want.push(bytes);
    }
    let (img, _) = write_image(tmp.path(), "sd.img", &t, &opts(32 << 20));
    ntfsfix_clean(&img);
    let sds = common::run(
        common::tool("ntfscat")
            .args(["-a", "0x80", "-n", "$SDS"])
            .arg(&img)
            .arg("/$Secure"),
    );
    assert!(
        sds.stdout.len() > 0x80000,
        "$SDS is {} bytes",
        sds.stdout.len()
    );
    let wim = tmp.path().join("sd.wim");
    common::run_ok(
        common::tool("wimlib-imagex")
            .arg("capture")
            .arg(&img)
            .arg(&wim)
            .arg("--compress=none"),
    );
    let det = wim_detailed(&wim);
    for i in [0usize, 1, 1499, 2999] {
        let e = &det[&format!("/d/f{i:04}")];
        assert_eq!(
            e.get("Security Descriptor"),
            Some(&hex(&want[i])),
            "f{i:04}"
        );
    }
}

/// A directory whose index needs more than 2048 blocks: its $BITMAP gets clusters too.
#[test]
fn directory_with_a_non_resident_index_bitmap() {
    let tmp = common::tempdir();
    let mut t = Tree::new(Meta::at(T));
    let d = t.add_dir(Tree::ROOT, "wide", Meta::at(T)).unwrap();
    let name = |i: usize| format!("{i:05}{}", "w".repeat(250));
    for i in 0..13_000 {
        t.add_file(d, &name(i), Meta::at(T), Content::Empty)
            .unwrap();
    }
    t.add_file(d, "last", Meta::at(T), Content::bytes(b"end".to_vec()))
        .unwrap();
    let (img, _) = write_image(tmp.path(), "wide.img", &t, &opts(128 << 20));
    ntfsfix_clean(&img);
    let info = ntfsinfo(&img, "/wide");
    let bitmap = info
        .split("Dumping attribute $BITMAP")
        .nth(1)
        .unwrap_or_default();
    assert!(bitmap.contains("Resident: \t\t No"), "{info}");
    assert_same_listing(&ls_recursive(&img), &expected_listing(&t));
    assert_eq!(cat(&img, "/wide/last"), b"end");
}
