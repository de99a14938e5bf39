//! XML image information (F§6): UTF-16LE text (BOM optional here), root `<WIM>` with
//! `<TOTALBYTES>` and one `<IMAGE INDEX="n">` per image. A deliberately small XML parser:
//! elements, attributes, text and the predefined/numeric entities; comments, processing
//! instructions and declarations are skipped. Depth and element counts are capped.

use super::{Error, Result};

/// Deepest element nesting accepted; WIM XML nests 4 levels, so 64 is generous.
const MAX_DEPTH: usize = 64;

/// Per-image fields from the XML data.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImageInfo {
    pub index: u32,
    pub name: Option<String>,
    pub description: Option<String>,
    pub display_name: Option<String>,
    pub display_description: Option<String>,
    /// `<FLAGS>`, usually the edition id.
    pub flags: Option<String>,
    pub edition_id: Option<String>,
    pub product_name: Option<String>,
    pub installation_type: Option<String>,
    pub arch: Option<u32>,
    pub dir_count: Option<u64>,
    pub file_count: Option<u64>,
    pub total_bytes: Option<u64>,
    pub hard_link_bytes: Option<u64>,
    /// FILETIMEs (100 ns since 1601).
    pub creation_time: Option<u64>,
    pub last_modification_time: Option<u64>,
    pub version_major: Option<u32>,
    pub version_minor: Option<u32>,
    pub version_build: Option<u32>,
    pub version_spbuild: Option<u32>,
    pub version_splevel: Option<u32>,
    pub languages: Vec<String>,
    pub default_language: Option<String>,
    pub wimboot: bool,
}

/// A parsed XML element.
#[derive(Debug, Clone, Default)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }

    fn path(&self, path: &[&str]) -> Option<&Element> {
        let mut e = self;
        for p in path {
            e = e.child(p)?;
        }
        Some(e)
    }

    fn text_at(&self, path: &[&str]) -> Option<String> {
        self.path(path).map(|e| e.text.trim().to_string())
    }

    fn num_at<T: std::str::FromStr>(&self, path: &[&str]) -> Option<T> {
        let t = self.text_at(path)?;
        if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            return u64::from_str_radix(h, 16)
                .ok()
                .and_then(|v| v.to_string().parse().ok());
        }
        t.parse().ok()
    }

    fn time_at(&self, name: &str) -> Option<u64> {
        let high: u64 = self.num_at(&[name, "HIGHPART"])?;
        let low: u64 = self.num_at(&[name, "LOWPART"])?;
        Some((high << 32) | (low & 0xFFFF_FFFF))
    }
}

/// Decode UTF-16LE (with or without BOM), stopping at a NUL like 7-Zip does.
fn decode_utf16(b: &[u8]) -> String {
    let mut units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    if units.first() == Some(&0xFEFF) {
        units.remove(0);
    }
    if let Some(z) = units.iter().position(|&u| u == 0) {
        units.truncate(z);
    }
    String::from_utf16_lossy(&units)
}

fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let end = match rest.find(';') {
            Some(e) if e <= 12 => e,
            _ => {
                out.push('&');
                rest = &rest[1..];
                continue;
            }
        };
        let ent = &rest[1..end];
        let c = match ent {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => {
                let n = if let Some(h) = ent.strip_prefix("#x").or_else(|| ent.strip_prefix("#X")) {
                    u32::from_str_radix(h, 16).ok()
                } else {
                    ent.strip_prefix('#').and_then(|d| d.parse().ok())
                };
                n.and_then(char::from_u32)
            }
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Parse an XML document into its root element.
pub fn parse_document(s: &str, at: u64) -> Result<Element> {
    let err = |what: String| Error::Xml { offset: at, what };
    let mut stack: Vec<Element> = vec![Element::default()];
    let mut i = 0usize;
    let b = s.as_bytes();
    while i < b.len() {
        if b[i] != b'<' {
            let j = s[i..].find('<').map_or(b.len(), |k| i + k);
            if let Some(top) = stack.last_mut() {
                top.text.push_str(&unescape(&s[i..j]));
            }
            i = j;
            continue;
        }
        let rest = &s[i..];
        if rest.starts_with("<?") {
            i += rest
                .find("?>")
                .ok_or_else(|| err("unterminated processing instruction".into()))?
                + 2;
            continue;
        }
        if rest.starts_with("<!--") {
            i += rest
                .find("-->")
                .ok_or_else(|| err("unterminated comment".into()))?
                + 3;
            continue;
        }
        if rest.starts_with("<!") {
            i += rest
                .find('>')
                .ok_or_else(|| err("unterminated declaration".into()))?
                + 1;
            continue;
        }
        let close = rest
            .find('>')
            .ok_or_else(|| err("unterminated tag".into()))?;
        let tag = &rest[1..close];
        i += close + 1;
        if let Some(name) = tag.strip_prefix('/') {
            let name = name.trim();
            let done = stack
                .pop()
                .ok_or_else(|| err("unbalanced end tag".into()))?;
            if done.name != name || stack.is_empty() {
                return Err(err(format!(
                    "end tag </{name}> does not match <{}>",
                    done.name
                )));
            }
            if let Some(top) = stack.last_mut() {
                top.children.push(done);
            }
            continue;
        }
        let self_closing = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let name_end = tag.find(|c: char| c.is_whitespace()).unwrap_or(tag.len());
        let mut el = Element {
            name: tag[..name_end].to_string(),
            ..Default::default()
        };
        if el.name.is_empty() {
            return Err(err("empty tag name".into()));
        }
        let mut a = tag[name_end..].trim();
        while !a.is_empty() {
            let eq = a
                .find('=')
                .ok_or_else(|| err(format!("attribute without value in <{}>", el.name)))?;
            let key = a[..eq].trim().to_string();
            let v = a[eq + 1..].trim_start();
            let q = v
                .chars()
                .next()
                .filter(|c| *c == '"' || *c == '\'')
                .ok_or_else(|| err("unquoted attribute".into()))?;
            let vend = v[1..]
                .find(q)
                .ok_or_else(|| err("unterminated attribute".into()))?;
            el.attrs.push((key, unescape(&v[1..1 + vend])));
            a = v[vend + 2..].trim_start();
        }
        if self_closing {
            if let Some(top) = stack.last_mut() {
                top.children.push(el);
            }
        } else {
            if stack.len() > MAX_DEPTH {
                return Err(err(format!("elements nest deeper than {MAX_DEPTH}")));
            }
            stack.push(el);
        }
    }
    if stack.len() != 1 {
        return Err(err("unclosed element at end of data".into()));
    }
    let mut doc = stack.pop().unwrap_or_default();
    if doc.children.len() != 1 {
        return Err(err(format!(
            "{} root elements, expected one",
            doc.children.len()
        )));
    }
    Ok(doc.children.remove(0))
}

/// Parse the XML resource: images in INDEX order and the WIM's `<TOTALBYTES>`.
pub fn parse(bytes: &[u8], at: u64) -> Result<(Vec<ImageInfo>, Option<u64>)> {
    let text = decode_utf16(bytes);
    let root = parse_document(&text, at)?;
    if !root.name.eq_ignore_ascii_case("WIM") {
        return Err(Error::Xml {
            offset: at,
            what: format!("root element is <{}>, expected <WIM>", root.name),
        });
    }
    let mut images = Vec::new();
    for img in root
        .children
        .iter()
        .filter(|c| c.name.eq_ignore_ascii_case("IMAGE"))
    {
        let index = img
            .attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("INDEX"))
            .and_then(|(_, v)| v.trim().parse::<u32>().ok())
            .ok_or_else(|| Error::Xml {
                offset: at,
                what: "IMAGE element without a numeric INDEX".into(),
            })?;
        let w = ["WINDOWS"];
        let langs = img.path(&["WINDOWS", "LANGUAGES"]);
        images.push(ImageInfo {
            index,
            name: img.text_at(&["NAME"]),
            description: img.text_at(&["DESCRIPTION"]),
            display_name: img.text_at(&["DISPLAYNAME"]),
            display_description: img.text_at(&["DISPLAYDESCRIPTION"]),
            flags: img.text_at(&["FLAGS"]),
            edition_id: img.text_at(&[w[0], "EDITIONID"]),
            product_name: img.text_at(&[w[0], "PRODUCTNAME"]),
            installation_type: img.text_at(&[w[0], "INSTALLATIONTYPE"]),
            arch: img.num_at(&[w[0], "ARCH"]),
            dir_count: img.num_at(&["DIRCOUNT"]),
            file_count: img.num_at(&["FILECOUNT"]),
            total_bytes: img.num_at(&["TOTALBYTES"]),
            hard_link_bytes: img.num_at(&["HARDLINKBYTES"]),
            creation_time: img.time_at("CREATIONTIME"),
            last_modification_time: img.time_at("LASTMODIFICATIONTIME"),
            version_major: img.num_at(&[w[0], "VERSION", "MAJOR"]),
            version_minor: img.num_at(&[w[0], "VERSION", "MINOR"]),
            version_build: img.num_at(&[w[0], "VERSION", "BUILD"]),
            version_spbuild: img.num_at(&[w[0], "VERSION", "SPBUILD"]),
            version_splevel: img.num_at(&[w[0], "VERSION", "SPLEVEL"]),
            languages: langs
                .map(|l| {
                    l.children
                        .iter()
                        .filter(|c| c.name.eq_ignore_ascii_case("LANGUAGE"))
                        .map(|c| c.text.trim().to_string())
                        .collect()
                })
                .unwrap_or_default(),
            default_language: img.text_at(&["WINDOWS", "LANGUAGES", "DEFAULT"]),
            wimboot: img.text_at(&["WIMBOOT"]).is_some_and(|t| t == "1"),
        });
    }
    images.sort_by_key(|i| i.index);
    for (k, img) in images.iter().enumerate() {
        if img.index as usize != k + 1 {
            return Err(Error::Xml {
                offset: at,
                what: format!(
                    "IMAGE INDEX values are not 1..={} (found {})",
                    images.len(),
                    img.index
                ),
            });
        }
    }
    Ok((images, root.num_at(&["TOTALBYTES"])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16(s: &str) -> Vec<u8> {
        let mut v = vec![0xFF, 0xFE];
        v.extend(s.encode_utf16().flat_map(|u| u.to_le_bytes()));
        v
    }

    #[test]
    fn parses_image_fields() {
        let x = "<WIM><TOTALBYTES>100</TOTALBYTES><IMAGE INDEX=\"1\"><NAME>A &amp; B</NAME>\
                 <CREATIONTIME><HIGHPART>0x01D00000</HIGHPART><LOWPART>0x00000010</LOWPART></CREATIONTIME>\
                 <WINDOWS><EDITIONID>ServerStandardNano</EDITIONID><LANGUAGES><LANGUAGE>en-US</LANGUAGE>\
                 <DEFAULT>en-US</DEFAULT></LANGUAGES><VERSION><MAJOR>10</MAJOR><BUILD>14393</BUILD></VERSION>\
                 </WINDOWS></IMAGE></WIM>";
        let (imgs, total) = parse(&utf16(x), 0).unwrap();
        assert_eq!(total, Some(100));
        assert_eq!(imgs[0].name.as_deref(), Some("A & B"));
        assert_eq!(imgs[0].creation_time, Some(0x01D0_0000_0000_0010));
        assert_eq!(imgs[0].edition_id.as_deref(), Some("ServerStandardNano"));
        assert_eq!(imgs[0].languages, vec!["en-US".to_string()]);
        assert_eq!(imgs[0].version_build, Some(14393));
    }

    #[test]
    fn rejects_broken_xml() {
        assert!(parse(&utf16("<WIM><IMAGE INDEX=\"2\"></IMAGE></WIM>"), 0).is_err());
        assert!(parse(&utf16("<WIM><IMAGE>"), 0).is_err());
        assert!(parse(&utf16(&"<a>".repeat(100)), 0).is_err());
    }
}
