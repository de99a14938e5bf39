//! The WIM resource writer and chunk compressors checked against wimlib: a file captured
//! uncompressed by wimlib-imagex has its blob rewritten as a chunked compressed resource
//! made by `write_resource` with our XPRESS / LZX encoders (blob-table entry and header
//! codec fields patched, facts-wim.md sections 1 and 2); `wimlib-imagex verify` must pass (it checks every blob's SHA-1) and
//! `wimlib-imagex apply` must give back the original bytes.

mod common;

use nanoforge::formats::wim::write::{write_resource, Compression};
use std::io::Cursor;
use std::path::Path;

/// Test file: text, E8-heavy code-like bytes, incompressible bytes and zeros.
fn sample() -> Vec<u8> {
    let mut d = Vec::new();
    for i in 0..6000 {
        d.extend_from_slice(format!("line {i}: quick brown fox {}\n", i % 13).as_bytes());
    }
    d.truncate(150_000);
    for i in 0..20000u32 {
        d.push(0xE8);
        d.extend_from_slice(&((i * 7919) % 30000).to_le_bytes());
        d.push((i & 3) as u8);
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..40000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        d.push(x as u8);
    }
    d.extend(std::iter::repeat_n(0u8, 50000));
    d
}

/// The resource as `write_resource` lays it out (chunk table, then the chunks).
fn resource(data: &[u8], chunk: usize, c: Compression) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    let (h, _) = write_resource(
        &mut Cursor::new(data),
        data.len() as u64,
        c,
        chunk as u32,
        &mut out,
    )
    .unwrap();
    assert_eq!(h.flags & 0x04, 0x04, "compressed");
    out.into_inner()
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

fn check(
    dir: &Path,
    base: &[u8],
    data: &[u8],
    label: &str,
    codec_flag: u32,
    chunk: usize,
    res: Vec<u8>,
) {
    let mut w = base.to_vec();
    let bt_size = (u64_at(&w, 0x30) & ((1 << 56) - 1)) as usize;
    let bt_off = u64_at(&w, 0x38) as usize;
    let end = w.len() as u64;
    let mut found = 0;
    for e in (bt_off..bt_off + bt_size).step_by(50) {
        if u64_at(&w, e + 16) == data.len() as u64 {
            let flags = w[e + 7] | 0x04;
            w[e..e + 8].copy_from_slice(&(res.len() as u64).to_le_bytes());
            w[e + 7] = flags;
            w[e + 8..e + 16].copy_from_slice(&end.to_le_bytes());
            found += 1;
        }
    }
    assert_eq!(found, 1, "{label}: blob entry of the test file");
    let flags = u32::from_le_bytes(w[0x10..0x14].try_into().unwrap()) | 0x2 | codec_flag;
    w[0x10..0x14].copy_from_slice(&flags.to_le_bytes());
    w[0x14..0x18].copy_from_slice(&(chunk as u32).to_le_bytes());
    w.extend_from_slice(&res);
    let wim = dir.join(format!("{label}.wim"));
    std::fs::write(&wim, &w).unwrap();
    common::run_ok(common::tool("wimlib-imagex").arg("verify").arg(&wim));
    let out = dir.join(format!("out-{label}"));
    common::run_ok(
        common::tool("wimlib-imagex")
            .arg("apply")
            .arg(&wim)
            .arg("1")
            .arg(&out),
    );
    assert!(
        common::read(&out.join("a.bin")) == data,
        "{label}: applied bytes differ"
    );
}

#[test]
fn wimlib_accepts_our_compressed_chunks() {
    common::require("wimlib-imagex");
    let tmp = common::tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let data = sample();
    std::fs::write(src.join("a.bin"), &data).unwrap();
    let base_path = tmp.path().join("base.wim");
    common::run_ok(
        common::tool("wimlib-imagex")
            .arg("capture")
            .arg(&src)
            .arg(&base_path)
            .arg("--compress=none"),
    );
    let base = common::read(&base_path);
    let x = resource(&data, 32768, Compression::Xpress);
    assert!(x.len() < data.len());
    check(tmp.path(), &base, &data, "xpress", 0x20000, 32768, x);
    for chunk in [32768usize, 131072] {
        let l = resource(&data, chunk, Compression::Lzx);
        assert!(l.len() < data.len());
        check(
            tmp.path(),
            &base,
            &data,
            &format!("lzx{chunk}"),
            0x40000,
            chunk,
            l,
        );
    }
}
