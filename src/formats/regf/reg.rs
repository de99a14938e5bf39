//! The text form of regedit (".reg" files): export and merge.
//!
//! Export writes "Windows Registry Editor Version 5.00", one `[\path]` block per key in
//! stored order (subkeys sorted as the hive keeps them, values as stored), CRLF line
//! ends. REG_SZ strings that are plain text print as `"..."`, 4-byte REG_DWORD as
//! `dword:xxxxxxxx`, everything else as `hex(t):` bytes without line wrapping, the form
//! `hivexregedit --export` prints. [`encode_reg_file`] makes the UTF-16LE-with-BOM file
//! regedit writes.
//!
//! Merge accepts that form, regedit's `hex:` for REG_BINARY, continuation lines, comments,
//! `[-key]` and `"name"=-` deletions, "REGEDIT4" files (whose hex(1)/hex(2)/hex(7) bytes
//! are 8-bit text that regedit widens to UTF-16), UTF-8 or UTF-16 input.

use super::model::{split_path, Hive, Value};
use super::names::utf16le;
use super::value_type::{REG_BINARY, REG_DWORD, REG_EXPAND_SZ, REG_MULTI_SZ, REG_SZ};
use super::{Error, Result};

const HEADER_V5: &str = "Windows Registry Editor Version 5.00";
const HEADER_V4: &str = "REGEDIT4";

/// What a merge changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeReport {
    pub keys_created: usize,
    pub keys_deleted: usize,
    pub values_set: usize,
    pub values_deleted: usize,
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// REG_SZ data that prints as a quoted string: UTF-16LE, one final NUL, no other NUL,
/// no control characters.
fn printable_sz(d: &[u8]) -> Option<String> {
    if d.len() < 2 || !d.len().is_multiple_of(2) {
        return None;
    }
    let units: Vec<u16> = d
        .chunks_exact(2)
        .map(|p| u16::from_le_bytes([p[0], p[1]]))
        .collect();
    let (last, body) = units.split_last()?;
    if *last != 0 {
        return None;
    }
    let s = String::from_utf16(body).ok()?;
    if s.chars().any(|c| (c as u32) < 0x20 || c == '\u{7f}') {
        return None;
    }
    Some(s)
}

fn value_line(v: &Value, out: &mut String) {
    if v.name.is_empty() {
        out.push('@');
    } else {
        out.push('"');
        out.push_str(&escape(&v.name));
        out.push('"');
    }
    out.push('=');
    match (v.data_type, v.data.len()) {
        (REG_SZ, _) if printable_sz(&v.data).is_some() => {
            out.push('"');
            out.push_str(&escape(&printable_sz(&v.data).unwrap_or_default()));
            out.push('"');
        }
        (REG_DWORD, 4) => {
            let d = u32::from_le_bytes([v.data[0], v.data[1], v.data[2], v.data[3]]);
            out.push_str(&format!("dword:{d:08x}"));
        }
        (t, _) => {
            out.push_str(&format!("hex({t:x}):"));
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            out.reserve(v.data.len() * 3);
            for (i, b) in v.data.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push(DIGITS[(b >> 4) as usize] as char);
                out.push(DIGITS[(b & 15) as usize] as char);
            }
        }
    }
    out.push_str("\r\n");
}

fn export_key(k: &super::Key, path: &str, out: &mut String) {
    out.push('[');
    out.push_str(path);
    out.push_str("]\r\n");
    for v in &k.values {
        value_line(v, out);
    }
    out.push_str("\r\n");
    for s in &k.subkeys {
        let child = if path.ends_with('\\') {
            format!("{path}{}", s.name)
        } else {
            format!("{path}\\{}", s.name)
        };
        export_key(s, &child, out);
    }
}

/// Export the whole hive (`None`) or the subtree at `key_path`, paths written as `[\A\B]`.
pub fn export_reg(hive: &Hive, key_path: Option<&str>) -> Result<String> {
    export_reg_prefixed(hive, key_path, None)
}

/// Export with a prefix such as `HKEY_LOCAL_MACHINE\SYSTEM` in front of every path
/// (`[PREFIX]` for the hive root, `[PREFIX\A]` below it).
pub fn export_reg_prefixed(
    hive: &Hive,
    key_path: Option<&str>,
    prefix: Option<&str>,
) -> Result<String> {
    let path = key_path.unwrap_or("");
    let key = hive
        .key(path)
        .ok_or_else(|| Error::NoSuchKey(path.to_string()))?;
    // Spell the path with the stored names.
    let mut names = Vec::new();
    let mut k = &hive.root;
    for c in split_path(path) {
        k = k
            .subkey(c)
            .ok_or_else(|| Error::NoSuchKey(path.to_string()))?;
        names.push(k.name.as_str());
    }
    let base = match prefix {
        Some(p) => {
            let p = p.trim_end_matches('\\');
            if names.is_empty() {
                p.to_string()
            } else {
                format!("{p}\\{}", names.join("\\"))
            }
        }
        None => format!("\\{}", names.join("\\")),
    };
    let mut out = String::new();
    out.push_str(HEADER_V5);
    out.push_str("\r\n\r\n");
    export_key(key, &base, &mut out);
    Ok(out)
}

/// The bytes regedit writes for a .reg file: UTF-16LE with a byte order mark.
pub fn encode_reg_file(text: &str) -> Vec<u8> {
    let mut v = vec![0xFF, 0xFE];
    v.extend(utf16le(text));
    v
}

/// Decode a .reg file: UTF-16LE with BOM (regedit 5), UTF-8 with or without BOM, else
/// 8-bit text (REGEDIT4 files in a Western code page) read as Latin-1.
pub fn decode_reg_file(bytes: &[u8]) -> Result<String> {
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        if rest.len() % 2 != 0 {
            return Err(Error::RegSyntax {
                line: 0,
                detail: "UTF-16LE file has an odd number of bytes".into(),
            });
        }
        let units: Vec<u16> = rest
            .chunks_exact(2)
            .map(|p| u16::from_le_bytes([p[0], p[1]]))
            .collect();
        return String::from_utf16(&units).map_err(|_| Error::RegSyntax {
            line: 0,
            detail: "UTF-16LE file holds an unpaired surrogate".into(),
        });
    }
    let bytes = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s.to_string()),
        Err(_) => Ok(bytes.iter().map(|&b| b as char).collect()),
    }
}

fn syntax(line: usize, detail: impl Into<String>) -> Error {
    Error::RegSyntax {
        line,
        detail: detail.into(),
    }
}

/// Parse a quoted string at the start of `s`; returns (content, rest after the quote).
fn quoted(s: &str, line: usize) -> Result<(String, &str)> {
    let mut chars = s.char_indices();
    if chars.next().map(|(_, c)| c) != Some('"') {
        return Err(syntax(line, "expected a quoted string"));
    }
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &s[i + 1..])),
            '\\' => match chars.next() {
                Some((_, e)) => out.push(e),
                None => break,
            },
            c => out.push(c),
        }
    }
    Err(syntax(line, "quoted string has no closing quote"))
}

fn hex_bytes(s: &str, line: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let p: String = part.chars().filter(|c| !c.is_whitespace()).collect();
        if p.is_empty() {
            continue;
        }
        if p.len() > 2 {
            return Err(syntax(line, format!("'{p}' is not a hex byte")));
        }
        out.push(
            u8::from_str_radix(&p, 16)
                .map_err(|_| syntax(line, format!("'{p}' is not a hex byte")))?,
        );
    }
    Ok(out)
}

fn utf16z(s: &str) -> Vec<u8> {
    let mut v = utf16le(s);
    v.extend_from_slice(&[0, 0]);
    v
}

/// Parse the right-hand side of `name=`. `None` means delete.
fn value_spec(rhs: &str, line: usize, regedit4: bool) -> Result<Option<(u32, Vec<u8>)>> {
    let rhs = rhs.trim();
    if rhs == "-" {
        return Ok(None);
    }
    if rhs.starts_with('"') {
        let (s, rest) = quoted(rhs, line)?;
        if !rest.trim().is_empty() {
            return Err(syntax(
                line,
                format!("unexpected '{}' after the string", rest.trim()),
            ));
        }
        return Ok(Some((REG_SZ, utf16z(&s))));
    }
    let lower = rhs.to_ascii_lowercase();
    if let Some(d) = lower.strip_prefix("dword:") {
        let d = d.trim();
        if d.is_empty() || d.len() > 8 {
            return Err(syntax(line, format!("dword:{d} needs 1 to 8 hex digits")));
        }
        let v = u32::from_str_radix(d, 16)
            .map_err(|_| syntax(line, format!("dword:{d} is not hex")))?;
        return Ok(Some((REG_DWORD, v.to_le_bytes().to_vec())));
    }
    if let Some(h) = lower.strip_prefix("hex:") {
        return Ok(Some((REG_BINARY, hex_bytes(h, line)?)));
    }
    if let Some(rest) = lower.strip_prefix("hex(") {
        let (t, data) = rest
            .split_once("):")
            .ok_or_else(|| syntax(line, "expected hex(type):"))?;
        let t = u32::from_str_radix(t.trim(), 16)
            .map_err(|_| syntax(line, format!("hex({t}) type is not hex")))?;
        let mut bytes = hex_bytes(data, line)?;
        if regedit4 && matches!(t, REG_SZ | REG_EXPAND_SZ | REG_MULTI_SZ) {
            bytes = bytes.iter().flat_map(|&b| [b, 0]).collect();
        }
        return Ok(Some((t, bytes)));
    }
    if let Some(rest) = lower.strip_prefix("str(") {
        let (t, _) = rest
            .split_once("):")
            .ok_or_else(|| syntax(line, "expected str(type):"))?;
        let t = u32::from_str_radix(t.trim(), 16)
            .map_err(|_| syntax(line, format!("str({t}) type is not hex")))?;
        let q = &rhs[rhs.find("):").map_or(0, |i| i + 2)..];
        let (s, _) = quoted(q, line)?;
        return Ok(Some((t, utf16z(&s))));
    }
    Err(syntax(
        line,
        format!("cannot read value '{rhs}'; expected \"text\", dword:, hex:, hex(t): or -"),
    ))
}

fn strip_prefix_path<'a>(path: &'a str, prefix: Option<&str>, line: usize) -> Result<&'a str> {
    let Some(p) = prefix else { return Ok(path) };
    let p = p.trim_end_matches('\\');
    let n = p.len();
    if path.len() >= n && path.is_char_boundary(n) && path[..n].eq_ignore_ascii_case(p) {
        let rest = &path[n..];
        if rest.is_empty() || rest.starts_with('\\') {
            return Ok(rest);
        }
    }
    Err(syntax(
        line,
        format!("key [{path}] is not under the prefix {p}"),
    ))
}

/// Merge .reg text into the hive (paths relative to the hive root, `[\A]` or `[A]`).
/// Keys are created with their missing parents; new keys take the hive's
/// `base_block.last_written_timestamp` (set it first for reproducible output).
pub fn merge_reg(hive: &mut Hive, text: &str) -> Result<MergeReport> {
    merge_reg_prefixed(hive, text, None)
}

/// Merge .reg text whose key paths start with `prefix` (e.g. `HKEY_LOCAL_MACHINE\SYSTEM`).
pub fn merge_reg_prefixed(
    hive: &mut Hive,
    text: &str,
    prefix: Option<&str>,
) -> Result<MergeReport> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut report = MergeReport::default();
    let mut regedit4 = None;
    let mut current: Option<String> = None;
    let raw: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let mut i = 0;
    let ts = hive.base_block.last_written_timestamp;
    while i < raw.len() {
        let line_no = i + 1;
        let mut line = raw[i].to_string();
        i += 1;
        // Continuation: a value line ending in a backslash goes on with the next line.
        while !line.trim_start().starts_with('[')
            && line.trim_end().ends_with('\\')
            && i < raw.len()
        {
            let t = line.trim_end();
            line = format!("{}{}", &t[..t.len() - 1], raw[i].trim_start());
            i += 1;
        }
        let t = line.trim();
        if t.is_empty() || t.starts_with(';') {
            continue;
        }
        if regedit4.is_none() {
            regedit4 = Some(match t {
                HEADER_V5 => false,
                HEADER_V4 => true,
                _ => {
                    return Err(syntax(
                        line_no,
                        format!(
                            "expected the header \"{HEADER_V5}\" or \"{HEADER_V4}\", found \"{t}\""
                        ),
                    ))
                }
            });
            continue;
        }
        if let Some(inner) = t.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| syntax(line_no, "key line has no closing ']'"))?;
            if let Some(del) = inner.strip_prefix('-') {
                let path = strip_prefix_path(del, prefix, line_no)?;
                if split_path(path).is_empty() {
                    return Err(syntax(line_no, "the root key of a hive cannot be deleted"));
                }
                if hive.key(path).is_some() {
                    hive.delete_key(path)?;
                    report.keys_deleted += 1;
                }
                current = None;
            } else {
                let path = strip_prefix_path(inner, prefix, line_no)?;
                let mut missing = 0;
                let comps = split_path(path);
                for n in 1..=comps.len() {
                    if hive.key(&comps[..n].join("\\")).is_none() {
                        missing += 1;
                    }
                }
                hive.create_key(path, ts)
                    .map_err(|e| syntax(line_no, e.to_string()))?;
                report.keys_created += missing;
                current = Some(path.to_string());
            }
            continue;
        }
        let Some(path) = current.clone() else {
            return Err(syntax(
                line_no,
                format!("value line \"{t}\" outside a [key] section"),
            ));
        };
        let (name, rhs) = if let Some(r) = t.strip_prefix('@') {
            (String::new(), r.trim_start())
        } else {
            let (n, r) = quoted(t, line_no)?;
            (n, r.trim_start())
        };
        let rhs = rhs
            .strip_prefix('=')
            .ok_or_else(|| syntax(line_no, "expected '=' after the value name"))?;
        match value_spec(rhs, line_no, regedit4 == Some(true))? {
            None => {
                if hive.delete_value(&path, &name)? {
                    report.values_deleted += 1;
                }
            }
            Some((t, data)) => {
                hive.set_value(&path, Value::new(&name, t, data))
                    .map_err(|e| syntax(line_no, e.to_string()))?;
                report.values_set += 1;
            }
        }
    }
    if regedit4.is_none() {
        return Err(syntax(
            1,
            format!("empty input: expected the header \"{HEADER_V5}\""),
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_then_export() {
        let mut h = Hive::new_empty("R", 5);
        let text = "Windows Registry Editor Version 5.00\r\n\r\n[\\A]\r\n\"s\"=\"x\\\"y\\\\\"\r\n@=dword:0000002a\r\n\"b\"=hex:01,02,\\\r\n  03\r\n\r\n[\\A\\B]\r\n";
        let r = merge_reg(&mut h, text).unwrap();
        assert_eq!(r.keys_created, 2);
        assert_eq!(r.values_set, 3);
        let a = h.key("a").unwrap();
        assert_eq!(a.value("b").unwrap().data, [1, 2, 3]);
        let out = export_reg(&h, Some("A")).unwrap();
        assert_eq!(
            out,
            "Windows Registry Editor Version 5.00\r\n\r\n[\\A]\r\n\"s\"=\"x\\\"y\\\\\"\r\n@=dword:0000002a\r\n\"b\"=hex(3):01,02,03\r\n\r\n[\\A\\B]\r\n\r\n"
        );
        merge_reg(
            &mut h,
            "REGEDIT4\n[-\\A\\B]\n[\\A]\n\"s\"=-\n\"e\"=hex(2):41,00\n",
        )
        .unwrap();
        let a = h.key("a").unwrap();
        assert!(a.subkey("B").is_none() && a.value("s").is_none());
        assert_eq!(a.value("e").unwrap().data, [0x41, 0, 0, 0]);
    }

    #[test]
    fn syntax_errors_are_reported() {
        let mut h = Hive::new_empty("R", 5);
        for bad in [
            "[\\A]\n",
            "Windows Registry Editor Version 5.00\n\"v\"=\"x\"\n",
            "REGEDIT4\n[\\A]\n\"v\"=hex:1g\n",
            "REGEDIT4\n[-\\]\n",
            "REGEDIT4\n[\\A]\n\"v=1\n",
        ] {
            assert!(merge_reg(&mut h, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn file_encodings() {
        let t = "REGEDIT4\r\n";
        assert_eq!(decode_reg_file(&encode_reg_file(t)).unwrap(), t);
        assert_eq!(
            decode_reg_file(b"\xEF\xBB\xBFREGEDIT4").unwrap(),
            "REGEDIT4"
        );
        assert_eq!(decode_reg_file(b"\xE9").unwrap(), "é");
    }
}
