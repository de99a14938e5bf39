//! Device driver INF files: the text syntax and typed views of the sections offline driver
//! injection needs.
//!
//! Sources: Microsoft Windows driver docs, "General Syntax Rules for INF Files" (case-
//! insensitive names, `;` comments, `\` continuation, quoting, merged duplicate sections,
//! 255-character section names), "INF Strings Section" (`%strkey%`, `%%`, 4096-character
//! strings), "INF Version Section", "INF DriverVer Directive", "INF Manufacturer Section" and
//! "Combining Platform Extensions with Operating System Versions" (TargetOSVersion
//! decorations), "INF Models Section", "INF DDInstall Section" / ".HW" / ".Services",
//! "Creating INF Files for Multiple Platforms and Operating Systems" (.NTamd64 / .NT lookup),
//! "INF AddService Directive", "INF AddReg Directive", "INF DestinationDirs Section" and
//! "Using Dirids", "INF SourceDisksNames/SourceDisksFiles Section"; docs/facts-drivers.md §4.
//!
//! Parsing rules implemented here:
//! - Text: UTF-16LE with a byte order mark, UTF-8 (with or without BOM), else ANSI read as
//!   Windows-1252's ASCII-compatible superset Latin-1.
//! - A `;` outside quotes starts a comment. A line whose last character outside quotes and
//!   comments is `\` continues on the next line. `"..."` quotes a field (`""` is a literal
//!   quote inside it); quotes never span lines. Commas outside quotes separate fields, the
//!   first `=` outside quotes separates the key; unquoted text is trimmed.
//! - `%strkey%` is replaced from `[Strings]` (overlaid by `[Strings.0409]`, the en-US table
//!   Server 2016 media default to), `%%` is a literal `%`, and `%<number>%` is left alone
//!   when it is not a string key: it is a dirid, read later by whoever knows the target paths.
//!   Any other undefined `%token%` is an error (Windows would install the raw token).
//! - Sections with the same name are merged, in file order.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::core::Guid;

/// Largest INF accepted. The largest INFs Windows ships (printer class INFs) are a few
/// MiB; this leaves room and stops a wrong file from filling memory.
pub const MAX_INF_BYTES: usize = 32 << 20;
/// Longest logical line, continuations included, in characters: far above real INFs and
/// a bound on the work per line.
pub const MAX_LINE_CHARS: usize = 64 * 1024;
/// Longest field after string substitution: MAX_INF_STRING_LENGTH (4096) in SetupAPI,
/// the limit "INF Strings Section" gives.
pub const MAX_FIELD_CHARS: usize = 4096;
/// Longest section name ("General Syntax Rules for INF Files", Windows 2000 and later).
pub const MAX_SECTION_NAME: usize = 255;
/// Most lines kept from one INF (all sections): a bound on memory for hostile input.
pub const MAX_LINES: usize = 1 << 20;

/// Everything that can go wrong reading an INF. Each message names the file and line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{file}: {size} bytes, above the {MAX_INF_BYTES}-byte limit for an INF; is this really an INF file?")]
    TooLarge { file: String, size: usize },
    #[error("{file}: {what}; save the INF as UTF-16LE with a byte order mark, UTF-8 or ANSI")]
    Encoding { file: String, what: String },
    #[error("{file} line {line}: {detail}")]
    Syntax {
        file: String,
        line: usize,
        detail: String,
    },
    #[error("{file} line {line}: %{token}% is not defined in [Strings]; add it there or write %% for a literal percent sign")]
    UndefinedString {
        file: String,
        line: usize,
        token: String,
    },
    /// `at` is " line N" naming the first line that refers to the section, or "".
    #[error("{file}{at}: no [{section}] section{why}")]
    MissingSection {
        file: String,
        at: String,
        section: String,
        why: String,
    },
    #[error("{file} line {line}: [{section}] {key}: {detail}")]
    BadEntry {
        file: String,
        line: usize,
        section: String,
        key: String,
        detail: String,
    },
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
    }
}

/// Result with this module's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One logical line of a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// 1-based number of the line's first physical line.
    pub line: usize,
    /// The text left of `=`, strings substituted; `None` for lines without `=`.
    pub key: Option<String>,
    /// The key as written (quotes removed, no substitution): `%Desc%` stays `%Desc%`.
    pub raw_key: Option<String>,
    /// The comma-separated fields right of `=` (or the whole line), strings substituted.
    pub fields: Vec<String>,
}

impl Line {
    /// Field `i`, or "" when absent.
    pub fn field(&self, i: usize) -> &str {
        self.fields.get(i).map(String::as_str).unwrap_or("")
    }

    /// Whether the key is `name` (case-insensitive).
    pub fn is(&self, name: &str) -> bool {
        self.key
            .as_deref()
            .is_some_and(|k| k.eq_ignore_ascii_case(name))
    }
}

/// A section: its name as first written, the line of its first header, its lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub line: usize,
    pub lines: Vec<Line>,
}

/// A parsed INF.
#[derive(Debug, Clone)]
pub struct Inf {
    /// The file name, for messages.
    pub file: String,
    sections: Vec<Section>,
    /// Lower-cased section name -> index in `sections`.
    index: BTreeMap<String, usize>,
    /// Lower-cased string key -> text.
    strings: BTreeMap<String, String>,
}

// ---------------------------------------------------------------------------------------
// Text decoding and tokenising

fn decode(file: &str, bytes: &[u8]) -> Result<String> {
    if bytes.len() > MAX_INF_BYTES {
        return Err(Error::TooLarge {
            file: file.into(),
            size: bytes.len(),
        });
    }
    let enc = |what: &str| Error::Encoding {
        file: file.into(),
        what: what.into(),
    };
    if bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(enc(
            "UTF-16 big-endian text is not read by Windows' INF parser",
        ));
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        if rest.len() % 2 != 0 {
            return Err(enc("UTF-16LE text with an odd number of bytes"));
        }
        let units: Vec<u16> = rest
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        return String::from_utf16(&units).map_err(|_| enc("invalid UTF-16LE text"));
    }
    let b = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(bytes);
    match std::str::from_utf8(b) {
        Ok(s) => Ok(s.to_string()),
        Err(_) => Ok(b.iter().map(|&c| char::from(c)).collect()),
    }
}

/// A logical line split into key and fields, before string substitution.
#[derive(Debug, Default)]
struct RawLine {
    line: usize,
    key: Option<String>,
    fields: Vec<String>,
}

/// Split one logical line (comments already handled by the caller) into key and fields.
fn split_line(file: &str, line: usize, text: &str) -> Result<RawLine> {
    let mut out = RawLine {
        line,
        ..RawLine::default()
    };
    let mut fields: Vec<String> = Vec::new();
    let mut cur = String::new();
    // Unquoted whitespace is trimmed at the ends of a field; `pending` holds spaces that
    // become part of the field only if more text follows.
    let mut pending = String::new();
    let mut started = false;
    let mut in_quote = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quote {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    in_quote = false;
                }
            } else {
                cur.push(c);
            }
            continue;
        }
        match c {
            '"' => {
                if started {
                    cur.push_str(&pending);
                }
                pending.clear();
                started = true;
                in_quote = true;
            }
            ',' => {
                fields.push(std::mem::take(&mut cur));
                pending.clear();
                started = false;
            }
            '=' if out.key.is_none() && fields.is_empty() => {
                out.key = Some(std::mem::take(&mut cur));
                pending.clear();
                started = false;
            }
            c if c.is_whitespace() => {
                if started {
                    pending.push(c);
                }
            }
            c => {
                if started {
                    cur.push_str(&pending);
                }
                pending.clear();
                started = true;
                cur.push(c);
            }
        }
    }
    if in_quote {
        return Err(Error::Syntax {
            file: file.into(),
            line,
            detail: "unterminated quoted string (quotes cannot span lines); close the quote".into(),
        });
    }
    fields.push(cur);
    // A line that is only a key with nothing after `=` has one empty field; a bare line
    // `a` has one field "a".
    out.fields = fields;
    Ok(out)
}

/// Cut the comment off a physical line, tracking quotes; returns (code, ends_in_quote).
fn strip_comment(text: &str) -> (&str, bool) {
    let mut in_quote = false;
    for (i, c) in text.char_indices() {
        match c {
            '"' => in_quote = !in_quote,
            ';' if !in_quote => return (&text[..i], false),
            _ => {}
        }
    }
    (text, in_quote)
}

// ---------------------------------------------------------------------------------------
// Parsing

impl Inf {
    /// Parse INF bytes; `file` names the INF in errors.
    pub fn parse(file: &str, bytes: &[u8]) -> Result<Inf> {
        let text = decode(file, bytes)?;
        let syntax = |line: usize, detail: String| Error::Syntax {
            file: file.into(),
            line,
            detail,
        };
        // Pass 1: sections of raw lines.
        let mut raw: Vec<(String, usize, Vec<RawLine>)> = Vec::new();
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        let mut current: Option<usize> = None;
        let mut logical = String::new();
        let mut logical_chars = 0usize;
        let mut continuing = false;
        let mut logical_start = 0usize;
        let mut total_lines = 0usize;
        let physical: Vec<&str> = text.split('\n').collect();
        for (i, pl) in physical.iter().enumerate() {
            let n = i + 1;
            let pl = pl.strip_suffix('\r').unwrap_or(pl);
            let (code, open_quote) = strip_comment(pl);
            if open_quote {
                return Err(syntax(
                    n,
                    "unterminated quoted string (quotes cannot span lines); close the quote".into(),
                ));
            }
            if !continuing {
                logical_start = n;
            }
            let trimmed = code.trim_end();
            let (piece, continues) = match trimmed.strip_suffix('\\') {
                Some(p) => (p, true),
                None => (trimmed, false),
            };
            logical_chars = logical_chars.saturating_add(piece.chars().count());
            if logical_chars > MAX_LINE_CHARS {
                return Err(syntax(
                    logical_start,
                    format!(
                        "logical line longer than {MAX_LINE_CHARS} characters; this is not a real INF line"
                    ),
                ));
            }
            logical.push_str(piece);
            continuing = continues && i + 1 < physical.len();
            if continuing {
                continue;
            }
            logical_chars = 0;
            let line_text = std::mem::take(&mut logical);
            let t = line_text.trim();
            if t.is_empty() {
                continue;
            }
            if let Some(rest) = t.strip_prefix('[') {
                let Some(name) = rest.strip_suffix(']') else {
                    return Err(syntax(
                        logical_start,
                        format!("section header {t:?} has no closing ']'"),
                    ));
                };
                let name = name.trim();
                let name = name
                    .strip_prefix('"')
                    .and_then(|x| x.strip_suffix('"'))
                    .unwrap_or(name);
                if name.is_empty() || name.chars().count() > MAX_SECTION_NAME {
                    return Err(syntax(
                        logical_start,
                        format!("section names have 1 to {MAX_SECTION_NAME} characters"),
                    ));
                }
                let lower = name.to_lowercase();
                let idx = *index.entry(lower).or_insert_with(|| {
                    raw.push((name.to_string(), logical_start, Vec::new()));
                    raw.len() - 1
                });
                current = Some(idx);
                continue;
            }
            // Lines before the first section header are ignored, as Windows does.
            let Some(idx) = current else { continue };
            total_lines += 1;
            if total_lines > MAX_LINES {
                return Err(syntax(
                    logical_start,
                    format!("more than {MAX_LINES} lines; this is not a real INF"),
                ));
            }
            raw[idx].2.push(split_line(file, logical_start, t)?);
        }

        // Pass 2: the string table ([Strings], then [Strings.0409] over it).
        let mut strings: BTreeMap<String, String> = BTreeMap::new();
        for table in ["strings", "strings.0409"] {
            if let Some(&i) = index.get(table) {
                for l in &raw[i].2 {
                    if let Some(k) = &l.key {
                        let v = l.fields.join(",");
                        if v.chars().count() > MAX_FIELD_CHARS {
                            return Err(syntax(
                                l.line,
                                format!("string {k:?} is longer than {MAX_FIELD_CHARS} characters"),
                            ));
                        }
                        strings.insert(k.to_lowercase(), v);
                    }
                }
            }
        }

        // Pass 3: substitute.
        let mut sections = Vec::with_capacity(raw.len());
        for (name, line, lines) in raw {
            let lower = name.to_lowercase();
            let is_strings = lower == "strings" || lower.starts_with("strings.");
            let mut out = Vec::with_capacity(lines.len());
            for l in lines {
                let sub = |s: &str| -> Result<String> {
                    if is_strings {
                        Ok(s.to_string())
                    } else {
                        substitute(file, l.line, s, &strings)
                    }
                };
                let key = l.key.as_deref().map(sub).transpose()?;
                let fields = l
                    .fields
                    .iter()
                    .map(|f| sub(f))
                    .collect::<Result<Vec<_>>>()?;
                out.push(Line {
                    line: l.line,
                    key,
                    raw_key: l.key,
                    fields,
                });
            }
            sections.push(Section {
                name,
                line,
                lines: out,
            });
        }
        Ok(Inf {
            file: file.into(),
            sections,
            index,
            strings,
        })
    }

    /// A section by name (case-insensitive).
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.index
            .get(&name.to_lowercase())
            .map(|&i| &self.sections[i])
    }

    /// All sections in file order of first appearance.
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// A string from the string table (key without `%`, case-insensitive).
    pub fn string(&self, key: &str) -> Option<&str> {
        self.strings.get(&key.to_lowercase()).map(String::as_str)
    }

    fn missing(&self, section: &str, why: impl Into<String>) -> Error {
        Error::MissingSection {
            file: self.file.clone(),
            at: self
                .referenced_at(section)
                .map(|l| format!(" line {l}"))
                .unwrap_or_default(),
            section: section.into(),
            why: why.into(),
        }
    }

    /// The first line whose key or a field names `section` (for messages).
    fn referenced_at(&self, section: &str) -> Option<usize> {
        let is = |t: &str| t.trim().eq_ignore_ascii_case(section);
        self.sections
            .iter()
            .flat_map(|s| &s.lines)
            .filter(|l| l.key.as_deref().is_some_and(is) || l.fields.iter().any(|f| is(f)))
            .map(|l| l.line)
            .min()
    }

    fn bad(&self, l: &Line, section: &str, detail: impl Into<String>) -> Error {
        Error::BadEntry {
            file: self.file.clone(),
            line: l.line,
            section: section.into(),
            key: l.key.clone().unwrap_or_else(|| l.field(0).to_string()),
            detail: detail.into(),
        }
    }

    fn require(&self, name: &str, why: &str) -> Result<&Section> {
        self.section(name).ok_or_else(|| self.missing(name, why))
    }

    /// Value of `key` in `section` (last one wins, like SetupAPI's lookups of single keys).
    fn value<'a>(&'a self, section: &str, key: &str) -> Option<&'a Line> {
        self.section(section)?
            .lines
            .iter()
            .rev()
            .find(|l| l.is(key))
    }
}

/// Replace `%key%` tokens in `s`.
fn substitute(
    file: &str,
    line: usize,
    s: &str,
    strings: &BTreeMap<String, String>,
) -> Result<String> {
    if !s.contains('%') {
        return Ok(s.to_string());
    }
    let too_long = || Error::Syntax {
        file: file.into(),
        line,
        detail: format!(
            "a field is longer than {MAX_FIELD_CHARS} characters after string substitution"
        ),
    };
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(p) = rest.find('%') {
        out.push_str(&rest[..p]);
        let after = &rest[p + 1..];
        let Some(q) = after.find('%') else {
            // A lone percent sign stays as written.
            out.push_str(&rest[p..]);
            rest = "";
            break;
        };
        let token = &after[..q];
        if token.is_empty() {
            out.push('%');
        } else if let Some(v) = strings.get(&token.to_lowercase()) {
            out.push_str(v);
            // Stop early: many long strings in one field would otherwise grow it far
            // past the limit before the final check (4 bytes per character at most).
            if out.len() > MAX_FIELD_CHARS * 4 {
                return Err(too_long());
            }
        } else if token.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
            out.push('%');
            out.push_str(token);
            out.push('%');
        } else {
            return Err(Error::UndefinedString {
                file: file.into(),
                line,
                token: token.into(),
            });
        }
        rest = &after[q + 1..];
    }
    out.push_str(rest);
    if out.chars().count() > MAX_FIELD_CHARS {
        return Err(too_long());
    }
    Ok(out)
}

/// An INF number: decimal, or hexadecimal with `0x`; an optional leading `-`.
pub fn parse_number(s: &str) -> Option<i64> {
    let t = s.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t),
    };
    let v = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()?
    } else {
        t.parse::<i64>().ok()?
    };
    Some(if neg { -v } else { v })
}

fn parse_u32(s: &str) -> Option<u32> {
    let v = parse_number(s)?;
    u32::try_from(v).ok().or_else(|| {
        // Negative numbers written for flags wrap as in C (e.g. -1 = 0xFFFFFFFF).
        i32::try_from(v).ok().map(|x| x as u32)
    })
}

// ---------------------------------------------------------------------------------------
// [Version]

/// `DriverVer = mm/dd/yyyy[,a.b.c.d]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DriverVer {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub version: [u16; 4],
}

impl DriverVer {
    /// FILETIME of the date at 00:00 UTC (what the DriverDatabase `Version` value holds).
    pub fn filetime(&self) -> u64 {
        let days = days_from_civil(
            i64::from(self.year),
            u32::from(self.month),
            u32::from(self.day),
        );
        crate::core::time::unix_to_filetime(days * 86_400)
    }

    /// `(a<<48)|(b<<32)|(c<<16)|d`.
    pub fn version_u64(&self) -> u64 {
        self.version
            .iter()
            .fold(0u64, |acc, &p| (acc << 16) | u64::from(p))
    }

    fn parse(s: &[String]) -> Option<DriverVer> {
        let mut d = s.first()?.split('/');
        let month: u8 = d.next()?.trim().parse().ok()?;
        let day: u8 = d.next()?.trim().parse().ok()?;
        let year: u16 = d.next()?.trim().parse().ok()?;
        if d.next().is_some()
            || !(1..=12).contains(&month)
            || !(1..=31).contains(&day)
            || !(1601..=9999).contains(&year)
        {
            return None;
        }
        let mut version = [0u16; 4];
        if let Some(v) = s.get(1).filter(|v| !v.trim().is_empty()) {
            let parts: Vec<&str> = v.trim().split('.').collect();
            if parts.len() > 4 {
                return None;
            }
            for (i, p) in parts.iter().enumerate() {
                version[i] = p.trim().parse().ok()?;
            }
        }
        Some(DriverVer {
            year,
            month,
            day,
            version,
        })
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm, the inverse of
/// `core::time::civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The `[Version]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Version {
    pub signature: String,
    pub class: Option<String>,
    pub class_guid: Option<Guid>,
    pub provider: Option<String>,
    pub driver_ver: Option<DriverVer>,
    /// `CatalogFile.NTamd64` when present, else `CatalogFile.NT`, else `CatalogFile`.
    pub catalog_file: Option<String>,
    pub pnp_lockdown: bool,
}

impl Inf {
    /// The `[Version]` section, checked: a `$Windows NT$` or `$Chicago$` signature, a
    /// well-formed ClassGuid and DriverVer when present.
    pub fn version(&self) -> Result<Version> {
        let s = "Version";
        self.require(s, "; every INF starts with [Version]")?;
        let sig = self
            .value(s, "Signature")
            .ok_or_else(|| self.missing(s, " entry Signature; add Signature=\"$Windows NT$\""))?;
        let signature = sig.field(0).to_string();
        if !signature.eq_ignore_ascii_case("$Windows NT$")
            && !signature.eq_ignore_ascii_case("$Chicago$")
        {
            return Err(self.bad(
                sig,
                s,
                format!("expected \"$Windows NT$\" or \"$Chicago$\", found {signature:?}"),
            ));
        }
        let class_guid = match self.value(s, "ClassGuid") {
            Some(l) => Some(
                l.field(0)
                    .parse::<Guid>()
                    .map_err(|e| self.bad(l, s, e.to_string()))?,
            ),
            None => None,
        };
        let driver_ver = match self.value(s, "DriverVer") {
            Some(l) => Some(DriverVer::parse(&l.fields).ok_or_else(|| {
                self.bad(
                    l,
                    s,
                    format!(
                        "expected mm/dd/yyyy[,a.b.c.d] with numbers in range, found {:?}",
                        l.fields.join(",")
                    ),
                )
            })?),
            None => None,
        };
        let catalog_file = ["CatalogFile.NTamd64", "CatalogFile.NT", "CatalogFile"]
            .iter()
            .find_map(|k| self.value(s, k))
            .map(|l| l.field(0).to_string())
            .filter(|c| !c.is_empty());
        let get = |k: &str| {
            self.value(s, k)
                .map(|l| l.field(0).to_string())
                .filter(|v| !v.is_empty())
        };
        Ok(Version {
            signature,
            class: get("Class"),
            class_guid,
            provider: get("Provider"),
            driver_ver,
            catalog_file,
            pnp_lockdown: get("PnpLockdown").and_then(|v| parse_number(&v)) == Some(1),
        })
    }
}

// ---------------------------------------------------------------------------------------
// [Manufacturer] and TargetOSVersion decorations

/// Processor architectures of TargetOSVersion decorations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    X86,
    Ia64,
    Amd64,
    Arm,
    Arm64,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86 => "x86",
            Arch::Ia64 => "ia64",
            Arch::Amd64 => "amd64",
            Arch::Arm => "arm",
            Arch::Arm64 => "arm64",
        }
    }

    fn parse(s: &str) -> Option<Arch> {
        [Arch::X86, Arch::Ia64, Arch::Amd64, Arch::Arm, Arch::Arm64]
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s))
    }
}

/// The Windows an INF is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TargetOs {
    pub arch: Arch,
    pub major: u32,
    pub minor: u32,
    /// VER_NT_WORKSTATION 1, VER_NT_DOMAIN_CONTROLLER 2, VER_NT_SERVER 3.
    pub product_type: u32,
    /// VER_SUITE_* bits of the target.
    pub suite_mask: u32,
    pub build: u32,
}

impl TargetOs {
    /// Windows Server 2016 (and its Nano Server installation option): NT 10.0 build 14393,
    /// a server, amd64, no suite bits.
    pub const SERVER_2016: TargetOs = TargetOs {
        arch: Arch::Amd64,
        major: 10,
        minor: 0,
        product_type: 3,
        suite_mask: 0,
        build: 14393,
    };
}

/// A parsed TargetOSVersion: `nt[Arch][.[Major][.[Minor][.[ProductType][.[SuiteMask][.[Build]]]]]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decoration {
    pub text: String,
    /// `None` when no architecture is given (any architecture); `Err` text when unknown.
    pub arch: Option<Result<Arch, String>>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub product_type: Option<u32>,
    pub suite_mask: Option<u32>,
    pub build: Option<u32>,
}

impl Decoration {
    /// Parse one decoration; `None` when it does not start with `NT` or a field is not a number.
    pub fn parse(text: &str) -> Option<Decoration> {
        let t = text.trim();
        if !t.get(..2)?.eq_ignore_ascii_case("nt") {
            return None;
        }
        let mut parts = t.get(2..)?.split('.');
        let arch_text = parts.next().unwrap_or("");
        let arch = if arch_text.is_empty() {
            None
        } else {
            Some(Arch::parse(arch_text).ok_or_else(|| arch_text.to_string()))
        };
        let mut nums = [None; 5];
        for slot in nums.iter_mut() {
            match parts.next() {
                None => break,
                Some("") => {}
                Some(p) => *slot = Some(parse_u32(p)?),
            }
        }
        if parts.next().is_some() {
            return None;
        }
        Some(Decoration {
            text: t.to_string(),
            arch,
            major: nums[0],
            minor: nums[1],
            product_type: nums[2],
            suite_mask: nums[3],
            build: nums[4],
        })
    }

    /// Whether this decoration applies to `os`.
    pub fn matches(&self, os: &TargetOs) -> bool {
        let arch_ok = match &self.arch {
            None => true,
            Some(Ok(a)) => *a == os.arch,
            Some(Err(_)) => false,
        };
        let version_ok = match self.major {
            None => true,
            Some(maj) => (maj, self.minor.unwrap_or(0)) <= (os.major, os.minor),
        };
        arch_ok
            && version_ok
            && self.product_type.is_none_or(|p| p == os.product_type)
            && self.suite_mask.is_none_or(|m| os.suite_mask & m == m)
            && self.build.is_none_or(|b| b <= os.build)
    }

    /// Ordering key among matching decorations: the newest OS version first, then the more
    /// specific one (architecture, product type, suite mask given).
    fn rank(&self) -> (u32, u32, u32, u8) {
        let specific = u8::from(self.arch.is_some())
            + u8::from(self.product_type.is_some())
            + u8::from(self.suite_mask.is_some());
        (
            self.major.unwrap_or(0),
            self.minor.unwrap_or(0),
            self.build.unwrap_or(0),
            specific,
        )
    }
}

/// One `[Manufacturer]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Manufacturer {
    pub line: usize,
    /// The key as written (`%Mfg%`), or the models name for a bare entry.
    pub raw_name: String,
    /// The manufacturer name, strings substituted.
    pub name: String,
    pub models: String,
    pub decorations: Vec<String>,
}

/// Which models section of a manufacturer applies to a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelsChoice {
    /// The section to read, or `None` when no section applies to the target.
    pub section: Option<String>,
    /// Decorated sections that were not chosen, with why.
    pub skipped: Vec<String>,
}

impl Inf {
    /// The `[Manufacturer]` entries.
    pub fn manufacturers(&self) -> Result<Vec<Manufacturer>> {
        let s = self.require("Manufacturer", "; a device INF lists its models there")?;
        let mut out = Vec::new();
        for l in &s.lines {
            let models = l.field(0).trim().to_string();
            if models.is_empty() {
                return Err(self.bad(l, "Manufacturer", "no models section name"));
            }
            let (raw_name, name) = match (&l.raw_key, &l.key) {
                (Some(r), Some(k)) => (r.clone(), k.clone()),
                _ => (models.clone(), models.clone()),
            };
            out.push(Manufacturer {
                line: l.line,
                raw_name,
                name,
                models,
                decorations: l.fields[1..]
                    .iter()
                    .map(|d| d.trim().to_string())
                    .filter(|d| !d.is_empty())
                    .collect(),
            });
        }
        Ok(out)
    }

    /// Choose the models section of `m` for `os`, the way Windows does ("INF Manufacturer
    /// Section", "Combining Platform Extensions with Operating System Versions"):
    /// 1. A decoration applies when its architecture is absent or equal to the target's,
    ///    its `major.minor` is not newer than the target's, its product type (if given)
    ///    equals the target's, all its suite mask bits are set in the target's, and its
    ///    build number (if given) is not newer than the target's build.
    /// 2. Among those that apply, the newest OS version wins (major, minor, then build);
    ///    equal versions go to the more specific decoration (architecture, product type,
    ///    suite mask given); then to the first listed.
    /// 3. With no applicable decoration, the undecorated section is used only on x86:
    ///    since Windows Server 2003 SP1 other architectures require a decoration.
    ///
    /// The chosen section must exist; an existing but empty one means "no devices on this
    /// OS", which is how INF writers exclude a version.
    pub fn select_models(&self, m: &Manufacturer, os: &TargetOs) -> Result<ModelsChoice> {
        let mut best: Option<(Decoration, usize)> = None;
        let mut skipped = Vec::new();
        for (i, text) in m.decorations.iter().enumerate() {
            let Some(d) = Decoration::parse(text) else {
                skipped.push(format!(
                    "{}.{text}: not a TargetOSVersion decoration (nt[arch][.major[.minor...]])",
                    m.models
                ));
                continue;
            };
            if !d.matches(os) {
                skipped.push(format!(
                    "{}.{text}: does not apply to {} {}.{} build {}",
                    m.models,
                    os.arch.name(),
                    os.major,
                    os.minor,
                    os.build
                ));
                continue;
            }
            let better = match &best {
                None => true,
                Some((b, _)) => d.rank() > b.rank(),
            };
            if better {
                if let Some((b, _)) = best.take() {
                    skipped.push(format!(
                        "{}.{}: a closer decoration applies",
                        m.models, b.text
                    ));
                }
                best = Some((d, i));
            } else {
                skipped.push(format!("{}.{text}: a closer decoration applies", m.models));
            }
        }
        let section = match best {
            Some((d, _)) => Some(format!("{}.{}", m.models, d.text)),
            None if os.arch == Arch::X86 => Some(m.models.clone()),
            None => None,
        };
        if let Some(name) = &section {
            if self.section(name).is_none() {
                return Err(self.missing(
                    name,
                    format!(
                        ", which [Manufacturer] line {} names for {}; add the section or fix the entry",
                        m.line, m.name
                    ),
                ));
            }
        }
        Ok(ModelsChoice { section, skipped })
    }
}

// ---------------------------------------------------------------------------------------
// [Models]

/// One device line of a models section: `desc = install-section, hw-id[, compatible-id...]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    pub line: usize,
    /// The description as written (`%DevDesc%`).
    pub raw_description: String,
    pub description: String,
    pub install_section: String,
    pub hardware_id: String,
    pub compatible_ids: Vec<String>,
}

impl Inf {
    /// The device lines of a models section.
    pub fn devices(&self, models: &str) -> Result<Vec<Device>> {
        let s = self.require(models, "")?;
        let mut out = Vec::new();
        for l in &s.lines {
            let (Some(raw), Some(desc)) = (&l.raw_key, &l.key) else {
                return Err(self.bad(
                    l,
                    &s.name,
                    "expected description = install-section, hardware-id[, compatible-id...]",
                ));
            };
            let install = l.field(0).trim();
            let hw = l.field(1).trim();
            if install.is_empty() || hw.is_empty() {
                return Err(self.bad(
                    l,
                    &s.name,
                    "a device line needs an install section and a hardware id",
                ));
            }
            out.push(Device {
                line: l.line,
                raw_description: raw.clone(),
                description: desc.clone(),
                install_section: install.to_string(),
                hardware_id: hw.to_string(),
                compatible_ids: l.fields[2..]
                    .iter()
                    .map(|c| c.trim().to_string())
                    .filter(|c| !c.is_empty())
                    .collect(),
            });
        }
        Ok(out)
    }

    /// The DDInstall section Windows uses for `name` on `arch`: `name.NT<arch>`, else
    /// `name.NT`, else `name` ("Creating INF Files for Multiple Platforms and Operating
    /// Systems"). Returns the actual section name.
    pub fn install_section_name(&self, name: &str, arch: Arch) -> Option<String> {
        [
            format!("{name}.NT{}", arch.name()),
            format!("{name}.NT"),
            name.to_string(),
        ]
        .into_iter()
        .find_map(|n| self.section(&n).map(|s| s.name.clone()))
    }
}

// ---------------------------------------------------------------------------------------
// Install sections

/// The directives of an install section that offline injection acts on; every other
/// directive is listed in `other`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InstallSection {
    pub name: String,
    /// CopyFiles entries: `@file` or a file-list section name.
    pub copy_files: Vec<String>,
    pub add_reg: Vec<String>,
    pub include: Vec<String>,
    pub needs: Vec<String>,
    /// Other directives as `key = value` with their line numbers.
    pub other: Vec<(usize, String)>,
}

impl Inf {
    /// Read an install section's directives (`name` must exist).
    pub fn install_section(&self, name: &str) -> Result<InstallSection> {
        let s = self.require(name, "")?;
        let mut out = InstallSection {
            name: s.name.clone(),
            ..InstallSection::default()
        };
        for l in &s.lines {
            let list = || {
                l.fields
                    .iter()
                    .map(|f| f.trim().to_string())
                    .filter(|f| !f.is_empty())
            };
            match l.key.as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some("copyfiles") => out.copy_files.extend(list()),
                Some("addreg") => out.add_reg.extend(list()),
                Some("include") => out.include.extend(list()),
                Some("needs") => out.needs.extend(list()),
                _ => out.other.push((l.line, show_line(l))),
            }
        }
        Ok(out)
    }
}

fn show_line(l: &Line) -> String {
    match &l.key {
        Some(k) => format!("{k} = {}", l.fields.join(",")),
        None => l.fields.join(","),
    }
}

/// AddService flags ("INF AddService Directive").
pub mod service_flags {
    /// SPSVCINST_TAGTOFRONT
    pub const TAGTOFRONT: u32 = 0x1;
    /// SPSVCINST_ASSOCSERVICE: the device's function driver.
    pub const ASSOCSERVICE: u32 = 0x2;
    /// SPSVCINST_STARTSERVICE
    pub const STARTSERVICE: u32 = 0x800;
}

/// An `AddService = name, flags, service-install-section[, event-log-section[, type[, name]]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddService {
    pub line: usize,
    /// Empty for the NULL driver (`AddService = ,2`).
    pub name: String,
    pub flags: u32,
    pub install_section: String,
    pub event_log_section: Option<String>,
    /// Application, Security or System (the default).
    pub event_log_type: String,
    /// Event source name (defaults to the service name).
    pub event_name: String,
}

/// A `.Services` section: its AddService entries and anything else.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServicesSection {
    pub name: String,
    pub add_service: Vec<AddService>,
    pub other: Vec<(usize, String)>,
}

/// A service-install section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceInstall {
    pub name: String,
    pub service_type: u32,
    pub start_type: u32,
    pub error_control: u32,
    /// As written, dirid included (`%12%\viostor.sys`).
    pub service_binary: String,
    pub load_order_group: Option<String>,
    pub display_name: Option<String>,
    pub description: Option<String>,
    /// Services, and groups with a leading `+`.
    pub dependencies: Vec<String>,
    pub start_name: Option<String>,
    pub add_reg: Vec<String>,
    pub other: Vec<(usize, String)>,
}

impl Inf {
    /// Read a `.Services` section.
    pub fn services_section(&self, name: &str) -> Result<ServicesSection> {
        let s = self.require(name, "")?;
        let mut out = ServicesSection {
            name: s.name.clone(),
            ..ServicesSection::default()
        };
        for l in &s.lines {
            if !l.is("AddService") {
                out.other.push((l.line, show_line(l)));
                continue;
            }
            let name = l.field(0).trim().to_string();
            let flags = match l.field(1).trim() {
                "" => 0,
                f => parse_u32(f)
                    .ok_or_else(|| self.bad(l, &s.name, format!("flags {f:?} are not a number")))?,
            };
            let install = l.field(2).trim().to_string();
            if !name.is_empty() && install.is_empty() {
                return Err(self.bad(
                    l,
                    &s.name,
                    "AddService needs a service-install section (name, flags, section)",
                ));
            }
            let opt = |i: usize| Some(l.field(i).trim().to_string()).filter(|x| !x.is_empty());
            let event_log_type = match l.field(4).trim() {
                "" => "System".to_string(),
                t => t.to_string(),
            };
            out.add_service.push(AddService {
                line: l.line,
                event_name: opt(5).unwrap_or_else(|| name.clone()),
                name,
                flags,
                install_section: install,
                event_log_section: opt(3),
                event_log_type,
            });
        }
        Ok(out)
    }

    /// Read a service-install section; ServiceType, StartType, ErrorControl and
    /// ServiceBinary are required.
    pub fn service_install(&self, name: &str) -> Result<ServiceInstall> {
        let s = self.require(name, "")?;
        let num = |key: &str| -> Result<Option<u32>> {
            match self.value(name, key) {
                None => Ok(None),
                Some(l) => parse_u32(l.field(0)).map(Some).ok_or_else(|| {
                    self.bad(l, &s.name, format!("{:?} is not a number", l.field(0)))
                }),
            }
        };
        let need = |key: &str, v: Option<u32>| {
            v.ok_or_else(|| self.missing(name, format!(" entry {key}; a service-install section needs ServiceType, StartType, ErrorControl and ServiceBinary")))
        };
        let service_type = need("ServiceType", num("ServiceType")?)?;
        let start_type = need("StartType", num("StartType")?)?;
        let error_control = need("ErrorControl", num("ErrorControl")?)?;
        let text = |key: &str| {
            self.value(name, key)
                .map(|l| l.field(0).trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let service_binary = text("ServiceBinary").ok_or_else(|| {
            self.missing(
                name,
                " entry ServiceBinary; give the driver file, e.g. %12%\\x.sys",
            )
        })?;
        if start_type > 4 {
            let l = self.value(name, "StartType").expect("read above");
            return Err(self.bad(l, &s.name, format!("StartType {start_type} is not 0..=4")));
        }
        let mut add_reg = Vec::new();
        let mut dependencies = Vec::new();
        let mut other = Vec::new();
        const KNOWN: [&str; 8] = [
            "servicetype",
            "starttype",
            "errorcontrol",
            "servicebinary",
            "loadordergroup",
            "displayname",
            "description",
            "startname",
        ];
        for l in &s.lines {
            let k = l.key.as_deref().unwrap_or("").to_ascii_lowercase();
            if k == "addreg" {
                add_reg.extend(
                    l.fields
                        .iter()
                        .map(|f| f.trim().to_string())
                        .filter(|f| !f.is_empty()),
                );
            } else if k == "dependencies" {
                dependencies.extend(
                    l.fields
                        .iter()
                        .map(|f| f.trim().to_string())
                        .filter(|f| !f.is_empty()),
                );
            } else if !KNOWN.contains(&k.as_str()) {
                other.push((l.line, show_line(l)));
            }
        }
        Ok(ServiceInstall {
            name: s.name.clone(),
            service_type,
            start_type,
            error_control,
            service_binary,
            load_order_group: text("LoadOrderGroup"),
            display_name: text("DisplayName"),
            description: text("Description"),
            dependencies,
            start_name: text("StartName"),
            add_reg,
            other,
        })
    }
}

// ---------------------------------------------------------------------------------------
// AddReg

/// Registry roots of AddReg lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RegRoot {
    Hkcr,
    Hkcu,
    Hklm,
    Hku,
    /// Relative: the key the section is applied to.
    Hkr,
}

/// AddReg flags ("INF AddReg Directive").
pub mod addreg_flags {
    pub const BINVALUETYPE: u32 = 0x0000_0001;
    pub const NOCLOBBER: u32 = 0x0000_0002;
    pub const DELVAL: u32 = 0x0000_0004;
    pub const APPEND: u32 = 0x0000_0008;
    pub const KEYONLY: u32 = 0x0000_0010;
    pub const OVERWRITEONLY: u32 = 0x0000_0020;
    pub const KEY_64BIT: u32 = 0x0000_1000;
    pub const KEY_32BIT: u32 = 0x0000_4000;
    pub const TYPE_SZ: u32 = 0x0000_0000;
    pub const TYPE_MULTI_SZ: u32 = 0x0001_0000;
    pub const TYPE_EXPAND_SZ: u32 = 0x0002_0000;
    pub const TYPE_DWORD: u32 = 0x0001_0001;
    pub const TYPE_NONE: u32 = 0x0002_0001;
    /// The bits that select the value type.
    pub const TYPE_MASK: u32 = 0xFFFF_0000 | BINVALUETYPE;
}

/// One line of an add-registry section: `root, [subkey], [value-name], [flags], [value...]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddRegLine {
    pub line: usize,
    pub section: String,
    pub root: RegRoot,
    pub subkey: String,
    /// `None` when the value-name field is absent, `Some("")` for the default value.
    pub value_name: Option<String>,
    pub flags: u32,
    /// The value fields (absent when the line has fewer than five fields).
    pub data: Option<Vec<String>>,
}

/// What an AddReg line does to its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum RegAction {
    /// Create the key only.
    KeyOnly,
    /// Delete the value.
    DeleteValue(String),
    /// Set a value: name, registry type, data bytes.
    Set {
        name: String,
        data_type: u32,
        data: Vec<u8>,
    },
}

fn utf16z(s: &str) -> Vec<u8> {
    let mut v: Vec<u8> = s.encode_utf16().flat_map(u16::to_le_bytes).collect();
    v.extend([0, 0]);
    v
}

impl Inf {
    /// The lines of an add-registry section.
    pub fn add_reg_section(&self, name: &str) -> Result<Vec<AddRegLine>> {
        let s = self.require(name, ", named by an AddReg directive")?;
        let mut out = Vec::new();
        for l in &s.lines {
            // AddReg lines have no key; a stray `=` would put text in the key.
            let fields: Vec<String> = match &l.key {
                Some(k) => {
                    let mut v = vec![k.clone()];
                    v.extend(l.fields.iter().cloned());
                    v
                }
                None => l.fields.clone(),
            };
            let root = match fields[0].trim().to_ascii_uppercase().as_str() {
                "HKCR" => RegRoot::Hkcr,
                "HKCU" => RegRoot::Hkcu,
                "HKLM" => RegRoot::Hklm,
                "HKU" => RegRoot::Hku,
                "HKR" => RegRoot::Hkr,
                r => {
                    return Err(self.bad(
                        l,
                        &s.name,
                        format!("registry root {r:?} is not one of HKCR, HKCU, HKLM, HKU, HKR"),
                    ))
                }
            };
            let flags = match fields.get(3).map(|f| f.trim()).unwrap_or("") {
                "" => 0,
                f => parse_u32(f)
                    .ok_or_else(|| self.bad(l, &s.name, format!("flags {f:?} are not a number")))?,
            };
            out.push(AddRegLine {
                line: l.line,
                section: s.name.clone(),
                root,
                subkey: fields
                    .get(1)
                    .map(|f| f.trim().to_string())
                    .unwrap_or_default(),
                value_name: fields.get(2).map(|f| f.trim().to_string()),
                flags,
                data: (fields.len() > 4).then(|| fields[4..].to_vec()),
            });
        }
        Ok(out)
    }

    /// Turn an AddReg line into a registry action: the flags' type bits choose the
    /// registry type and how the value fields are read.
    pub fn reg_action(&self, r: &AddRegLine) -> Result<RegAction> {
        use addreg_flags::*;
        let err = |detail: String| Error::BadEntry {
            file: self.file.clone(),
            line: r.line,
            section: r.section.clone(),
            key: r.subkey.clone(),
            detail,
        };
        let name = r.value_name.clone().unwrap_or_default();
        if r.flags & KEYONLY != 0 {
            return Ok(RegAction::KeyOnly);
        }
        if r.flags & DELVAL != 0 {
            return Ok(RegAction::DeleteValue(name));
        }
        let Some(data) = &r.data else {
            if name.is_empty() {
                return Ok(RegAction::KeyOnly);
            }
            // A named value without data gets empty data of its type.
            let (t, d) = match r.flags & TYPE_MASK {
                TYPE_SZ => (1, utf16z("")),
                TYPE_EXPAND_SZ => (2, utf16z("")),
                TYPE_MULTI_SZ => (7, vec![0, 0]),
                TYPE_DWORD => (4, vec![0; 4]),
                TYPE_NONE => (0, Vec::new()),
                t if t & BINVALUETYPE != 0 => (t >> 16, Vec::new()),
                t => return Err(err(format!("value type flags {t:#x} are not defined"))),
            };
            return Ok(RegAction::Set {
                name,
                data_type: if r.flags & TYPE_MASK == BINVALUETYPE {
                    3
                } else {
                    t
                },
                data: d,
            });
        };
        let bytes = |fields: &[String]| -> Result<Vec<u8>> {
            fields
                .iter()
                .map(|f| {
                    let t = f.trim();
                    let h = t
                        .strip_prefix("0x")
                        .or_else(|| t.strip_prefix("0X"))
                        .unwrap_or(t);
                    u8::from_str_radix(h, 16)
                        .map_err(|_| err(format!("binary data byte {t:?} is not two hex digits")))
                })
                .collect()
        };
        let (data_type, bytes) = match r.flags & TYPE_MASK {
            TYPE_SZ => (1, utf16z(&data[0])),
            TYPE_EXPAND_SZ => (2, utf16z(&data[0])),
            TYPE_MULTI_SZ => {
                let mut v = Vec::new();
                for s in data.iter().filter(|s| !s.is_empty()) {
                    v.extend(utf16z(s));
                }
                v.extend([0, 0]);
                (7, v)
            }
            TYPE_DWORD => {
                if data.len() == 4 {
                    (4, bytes(data)?)
                } else {
                    let v = parse_u32(&data[0])
                        .ok_or_else(|| err(format!("DWORD value {:?} is not a number", data[0])))?;
                    (4, v.to_le_bytes().to_vec())
                }
            }
            TYPE_NONE => (0, bytes(data)?),
            BINVALUETYPE => (3, bytes(data)?),
            t if t & BINVALUETYPE != 0 => (t >> 16, bytes(data)?),
            t => return Err(err(format!("value type flags {t:#x} are not defined"))),
        };
        Ok(RegAction::Set {
            name,
            data_type,
            data: bytes,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Files

/// A `[DestinationDirs]` entry: a dirid and an optional subdirectory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DestDir {
    pub dirid: i64,
    pub subdir: String,
}

/// A `[SourceDisksFiles]` entry: the disk id and subdirectory of a file in the package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceFile {
    pub line: usize,
    pub name: String,
    pub disk: String,
    pub subdir: String,
}

/// One file of a CopyFiles list: destination and source names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyFile {
    pub line: usize,
    pub dest: String,
    pub source: String,
}

impl Inf {
    /// The destination of a file-list section: its own `[DestinationDirs]` entry, else
    /// `DefaultDestDir`. `None` when neither exists.
    pub fn destination(&self, file_list: Option<&str>) -> Result<Option<DestDir>> {
        let s = "DestinationDirs";
        let Some(sec) = self.section(s) else {
            return Ok(None);
        };
        let l = file_list
            .and_then(|f| sec.lines.iter().rev().find(|l| l.is(f)))
            .or_else(|| sec.lines.iter().rev().find(|l| l.is("DefaultDestDir")));
        let Some(l) = l else { return Ok(None) };
        let dirid = parse_number(l.field(0))
            .ok_or_else(|| self.bad(l, s, format!("dirid {:?} is not a number", l.field(0))))?;
        Ok(Some(DestDir {
            dirid,
            subdir: l.field(1).trim().to_string(),
        }))
    }

    /// The files a CopyFiles entry names: `@file` is one file, anything else a file-list
    /// section of `dest[, source[, unused[, flags]]]` lines.
    pub fn copy_list(&self, entry: &str) -> Result<Vec<CopyFile>> {
        if let Some(f) = entry.strip_prefix('@') {
            return Ok(vec![CopyFile {
                line: 0,
                dest: f.trim().to_string(),
                source: f.trim().to_string(),
            }]);
        }
        let s = self.require(entry, ", named by a CopyFiles directive")?;
        let mut out = Vec::new();
        for l in &s.lines {
            let fields: Vec<&str> = match &l.key {
                Some(k) => std::iter::once(k.as_str())
                    .chain(l.fields.iter().map(String::as_str))
                    .collect(),
                None => l.fields.iter().map(String::as_str).collect(),
            };
            let dest = fields[0].trim();
            if dest.is_empty() {
                return Err(self.bad(l, &s.name, "no destination file name"));
            }
            let source = fields.get(1).map(|x| x.trim()).filter(|x| !x.is_empty());
            out.push(CopyFile {
                line: l.line,
                dest: dest.to_string(),
                source: source.unwrap_or(dest).to_string(),
            });
        }
        Ok(out)
    }

    /// The package's files for `arch`: `[SourceDisksFiles]` overlaid by
    /// `[SourceDisksFiles.<arch>]`, keyed by lower-cased name.
    pub fn source_files(&self, arch: Arch) -> BTreeMap<String, SourceFile> {
        let mut out = BTreeMap::new();
        for name in [
            "SourceDisksFiles".to_string(),
            format!("SourceDisksFiles.{}", arch.name()),
        ] {
            if let Some(s) = self.section(&name) {
                for l in &s.lines {
                    let (file, disk, sub) = match &l.key {
                        Some(k) => (k.trim(), l.field(0), l.field(1)),
                        None => (l.field(0).trim(), "", ""),
                    };
                    if file.is_empty() {
                        continue;
                    }
                    out.insert(
                        file.to_lowercase(),
                        SourceFile {
                            line: l.line,
                            name: file.to_string(),
                            disk: disk.trim().to_string(),
                            subdir: sub.trim().to_string(),
                        },
                    );
                }
            }
        }
        out
    }

    /// The path of a source disk (`diskid = desc[, tag[, unused[, path]]]`), "" when the
    /// disk is the INF's own folder or unknown.
    pub fn source_disk_path(&self, disk: &str, arch: Arch) -> String {
        for name in [
            format!("SourceDisksNames.{}", arch.name()),
            "SourceDisksNames".to_string(),
        ] {
            if let Some(l) = self.value(&name, disk) {
                return l.field(3).trim().trim_matches('\\').to_string();
            }
        }
        String::new()
    }

    /// The path of a package file relative to the INF's folder (`\`-separated), from its
    /// source disk and subdirectory.
    pub fn source_path(&self, file: &str, arch: Arch) -> String {
        let files = self.source_files(arch);
        let mut parts: Vec<String> = Vec::new();
        if let Some(sf) = files.get(&file.to_lowercase()) {
            let disk = self.source_disk_path(&sf.disk, arch);
            for p in [disk.as_str(), sf.subdir.as_str()] {
                parts.extend(
                    p.split(['\\', '/'])
                        .filter(|x| !x.is_empty() && *x != ".")
                        .map(str::to_string),
                );
            }
        }
        parts.push(file.to_string());
        parts.join("\\")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"; A viostor-like INF
[Version]
Signature="$Windows NT$"
Class=SCSIAdapter
ClassGUID={4D36E97B-E325-11CE-BFC1-08002BE10318}
Provider=%VENDOR%
DriverVer=06/21/2016,62.72.104.12600 ; trailing comment
CatalogFile=viostor.cat

[Manufacturer]
%VENDOR% = RH, NTx86, NTamd64.6.3, NTamd64.10.0, NTamd64.10.0...17763, NTarm64.10.0

[RH.NTx86]
%Desc% = scsi_inst, PCI\VEN_1AF4&DEV_1001

[RH.NTamd64.6.3]
%Desc% = old_inst, PCI\VEN_1AF4&DEV_1001

[RH.NTamd64.10.0]
%Desc% = scsi_inst, PCI\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00, \
    PCI\VEN_1AF4&DEV_1001

[rh.ntamd64.10.0...17763]
%Desc% = new_inst, PCI\VEN_1AF4&DEV_1001

[RH.NTarm64.10.0]

[scsi_inst.NTamd64]
CopyFiles = @viostor.sys
AddReg = a , b

[SCSI_inst.NTamd64.Services]
AddService = viostor, 0x00000002, svc, evt

[svc]
ServiceType = 1
StartType = 0
ErrorControl = 1
ServiceBinary = %12%\viostor.sys
LoadOrderGroup = SCSI miniport
AddReg = a

[a]
HKR, "Parameters\PnpInterface", "5", 0x00010001, 1
HKR, Parameters, BusType, %REG_DWORD%, 0x00000001
HKR, , "Quoted ""name""", , "x;y, z"
HKR, M, List, 0x00010000, "a", "b"
HKR, B, Bin, 1, 01, ff
HKR, K, , 0x10

[Strings]
VENDOR = "Red Hat, Inc."
Desc = "VirtIO SCSI controller"
REG_DWORD = 0x00010001

[Strings.0409]
desc = "Red Hat VirtIO SCSI controller"
"#;

    fn sample() -> Inf {
        Inf::parse("viostor.inf", SAMPLE.as_bytes()).unwrap()
    }

    #[test]
    fn version_section() {
        let v = sample().version().unwrap();
        assert_eq!(v.class.as_deref(), Some("SCSIAdapter"));
        assert_eq!(v.provider.as_deref(), Some("Red Hat, Inc."));
        assert_eq!(
            v.class_guid.unwrap().to_string(),
            "4d36e97b-e325-11ce-bfc1-08002be10318"
        );
        let dv = v.driver_ver.unwrap();
        assert_eq!((dv.year, dv.month, dv.day), (2016, 6, 21));
        assert_eq!(dv.version, [62, 72, 104, 12600]);
        // 2016-06-21 00:00 UTC is Unix 1466467200.
        assert_eq!(
            dv.filetime(),
            crate::core::time::unix_to_filetime(1_466_467_200)
        );
        assert_eq!(
            dv.version_u64(),
            (62u64 << 48) | (72 << 32) | (104 << 16) | 12600
        );
        assert_eq!(v.catalog_file.as_deref(), Some("viostor.cat"));
    }

    #[test]
    fn decorations_pick_the_closest_one_not_newer_than_the_target() {
        let inf = sample();
        let m = &inf.manufacturers().unwrap()[0];
        assert_eq!(m.raw_name, "%VENDOR%");
        assert_eq!(m.name, "Red Hat, Inc.");
        let c = inf.select_models(m, &TargetOs::SERVER_2016).unwrap();
        assert_eq!(c.section.as_deref(), Some("RH.NTamd64.10.0"));
        assert_eq!(c.skipped.len(), 4, "{:?}", c.skipped);
        // A newer build takes the build-decorated section; 8.1 takes the 6.3 one.
        let newer = TargetOs {
            build: 17763,
            ..TargetOs::SERVER_2016
        };
        assert_eq!(
            inf.select_models(m, &newer).unwrap().section.as_deref(),
            Some("RH.NTamd64.10.0...17763")
        );
        let old = TargetOs {
            major: 6,
            minor: 3,
            build: 9600,
            ..TargetOs::SERVER_2016
        };
        assert_eq!(
            inf.select_models(m, &old).unwrap().section.as_deref(),
            Some("RH.NTamd64.6.3")
        );
        let ancient = TargetOs {
            major: 6,
            minor: 1,
            build: 7601,
            ..TargetOs::SERVER_2016
        };
        assert_eq!(inf.select_models(m, &ancient).unwrap().section, None);
        // An empty decorated section applies and lists no device.
        let arm = TargetOs {
            arch: Arch::Arm64,
            ..TargetOs::SERVER_2016
        };
        let c = inf.select_models(m, &arm).unwrap();
        assert!(inf
            .devices(c.section.as_deref().unwrap())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn decoration_fields() {
        let d = Decoration::parse("NTamd64.10.0.3.0x10.14393").unwrap();
        assert_eq!(d.arch, Some(Ok(Arch::Amd64)));
        assert_eq!(
            (d.major, d.minor, d.product_type, d.suite_mask, d.build),
            (Some(10), Some(0), Some(3), Some(0x10), Some(14393))
        );
        assert!(!d.matches(&TargetOs::SERVER_2016), "suite bit missing");
        assert!(Decoration::parse("NT...3")
            .unwrap()
            .matches(&TargetOs::SERVER_2016));
        assert!(!Decoration::parse("NT...1")
            .unwrap()
            .matches(&TargetOs::SERVER_2016));
        assert!(!Decoration::parse("NT.10.0.1")
            .unwrap()
            .matches(&TargetOs::SERVER_2016));
        assert!(!Decoration::parse("NTmips")
            .unwrap()
            .matches(&TargetOs::SERVER_2016));
        assert!(Decoration::parse("Win2k").is_none());
        assert!(Decoration::parse("NTamd64.x").is_none());
    }

    #[test]
    fn devices_install_sections_and_services() {
        let inf = sample();
        let d = inf.devices("RH.NTamd64.10.0").unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].raw_description, "%Desc%");
        assert_eq!(d[0].description, "Red Hat VirtIO SCSI controller");
        assert_eq!(d[0].install_section, "scsi_inst");
        assert_eq!(
            d[0].hardware_id,
            "PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00"
        );
        assert_eq!(d[0].compatible_ids, ["PCI\\VEN_1AF4&DEV_1001"]);
        let name = inf.install_section_name("scsi_inst", Arch::Amd64).unwrap();
        assert_eq!(name, "scsi_inst.NTamd64");
        assert_eq!(inf.install_section_name("scsi_inst", Arch::X86), None);
        let is = inf.install_section(&name).unwrap();
        assert_eq!(is.copy_files, ["@viostor.sys"]);
        assert_eq!(is.add_reg, ["a", "b"]);
        let svcs = inf.services_section(&format!("{name}.Services")).unwrap();
        let a = &svcs.add_service[0];
        assert_eq!((a.name.as_str(), a.flags), ("viostor", 2));
        assert_eq!(a.event_log_section.as_deref(), Some("evt"));
        assert_eq!(a.event_log_type, "System");
        let si = inf.service_install(&a.install_section).unwrap();
        assert_eq!(
            (si.service_type, si.start_type, si.error_control),
            (1, 0, 1)
        );
        assert_eq!(si.service_binary, "%12%\\viostor.sys");
        assert_eq!(si.load_order_group.as_deref(), Some("SCSI miniport"));
        assert_eq!(si.add_reg, ["a"]);
    }

    #[test]
    fn add_reg_lines_and_types() {
        let inf = sample();
        let lines = inf.add_reg_section("a").unwrap();
        let acts: Vec<RegAction> = lines.iter().map(|l| inf.reg_action(l).unwrap()).collect();
        assert_eq!(lines[0].subkey, "Parameters\\PnpInterface");
        assert_eq!(
            acts[0],
            RegAction::Set {
                name: "5".into(),
                data_type: 4,
                data: vec![1, 0, 0, 0]
            }
        );
        assert_eq!(
            acts[1],
            RegAction::Set {
                name: "BusType".into(),
                data_type: 4,
                data: vec![1, 0, 0, 0]
            }
        );
        assert_eq!(
            acts[2],
            RegAction::Set {
                name: "Quoted \"name\"".into(),
                data_type: 1,
                data: utf16z("x;y, z")
            }
        );
        let mut multi = utf16z("a");
        multi.extend(utf16z("b"));
        multi.extend([0, 0]);
        assert_eq!(
            acts[3],
            RegAction::Set {
                name: "List".into(),
                data_type: 7,
                data: multi
            }
        );
        assert_eq!(
            acts[4],
            RegAction::Set {
                name: "Bin".into(),
                data_type: 3,
                data: vec![1, 0xff]
            }
        );
        assert_eq!(acts[5], RegAction::KeyOnly);
    }

    #[test]
    fn utf16_with_bom_and_sections_merge() {
        let text = "[Version]\r\nSignature=\"$Windows NT$\"\r\n[X]\r\na=1\r\n[x]\r\nb=2\r\n";
        let mut b = vec![0xFF, 0xFE];
        b.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        let inf = Inf::parse("u.inf", &b).unwrap();
        assert_eq!(inf.section("X").unwrap().lines.len(), 2);
        assert_eq!(inf.version().unwrap().signature, "$Windows NT$");
        // ANSI text that is not UTF-8 reads as Latin-1.
        let inf = Inf::parse("a.inf", b"[S]\nk=caf\xe9\n").unwrap();
        assert_eq!(inf.section("s").unwrap().lines[0].field(0), "café");
    }

    #[test]
    fn percent_escapes_and_dirids() {
        let inf = Inf::parse(
            "p.inf",
            b"[S]\nk=%%SystemRoot%%\\x, %12%\\y.sys, 50%\n[Strings]\n",
        )
        .unwrap();
        let l = &inf.section("S").unwrap().lines[0];
        assert_eq!(l.fields, ["%SystemRoot%\\x", "%12%\\y.sys", "50%"]);
    }

    fn err(text: &[u8]) -> String {
        Inf::parse("bad.inf", text).unwrap_err().to_string()
    }

    #[test]
    fn hostile_inputs_give_clear_errors() {
        let e = err(b"[Version]\nSignature=\"$Windows NT$\nClass=x\n");
        assert!(
            e.starts_with("bad.inf line 2: unterminated quoted string"),
            "{e}"
        );
        let e = err(b"[S]\nk=%Nope%\n[Strings]\nYes=1\n");
        assert_eq!(
            e,
            "bad.inf line 2: %Nope% is not defined in [Strings]; add it there or write %% for a literal percent sign"
        );
        let mut huge = b"[S]\nk=".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_LINE_CHARS + 1));
        let e = err(&huge);
        assert!(
            e.starts_with("bad.inf line 2: logical line longer than"),
            "{e}"
        );
        // A huge line made of continuations is caught too.
        let cont = "[S]\n".to_string()
            + &"k=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\\\n".repeat(2000);
        assert!(err(cont.as_bytes()).contains("logical line longer than"));
        let e = err(b"[Version\nSignature=x\n");
        assert!(e.contains("line 1: section header"), "{e}");
        let e = err(&[0xFF, 0xFE, 0x41]);
        assert!(e.contains("odd number of bytes"), "{e}");
        let e = err(b"[S]\nk=%A%\n[Strings]\nA=\"x\n");
        assert!(e.contains("line 4: unterminated"), "{e}");
        // A field growing past 4096 characters through substitution.
        let big = format!("[S]\nk=%A%%A%\n[Strings]\nA={}\n", "x".repeat(3000));
        assert!(
            err(big.as_bytes()).contains("longer than 4096 characters after string substitution")
        );
    }

    #[test]
    fn missing_sections_and_bad_entries() {
        let inf = Inf::parse("m.inf", b"[Strings]\n").unwrap();
        assert_eq!(
            inf.version().unwrap_err().to_string(),
            "m.inf: no [Version] section; every INF starts with [Version]"
        );
        let inf = Inf::parse(
            "m.inf",
            b"[Version]\nSignature=\"$Windows 95$\"\n[Manufacturer]\nX=Gone,NTamd64\n",
        )
        .unwrap();
        assert!(inf
            .version()
            .unwrap_err()
            .to_string()
            .starts_with("m.inf line 2: [Version] Signature: expected"));
        let m = &inf.manufacturers().unwrap()[0];
        let e = inf
            .select_models(m, &TargetOs::SERVER_2016)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("m.inf: no [Gone.NTamd64] section, which [Manufacturer] line 4"),
            "{e}"
        );
        let inf = Inf::parse(
            "m.inf",
            b"[Version]\nSignature=\"$Windows NT$\"\nDriverVer=13/01/2016\n[svc]\nServiceType=1\n[r]\nHKXX,a,b\nHKR,a,b,zz\n",
        )
        .unwrap();
        assert!(inf.version().unwrap_err().to_string().contains("DriverVer"));
        let e = inf.service_install("svc").unwrap_err().to_string();
        assert!(e.contains("entry StartType"), "{e}");
        assert!(inf
            .add_reg_section("r")
            .unwrap_err()
            .to_string()
            .contains("line 7"));
        assert!(inf.devices("nothere").is_err());
        let inf = Inf::parse("m.inf", b"[i]\nCopyFiles=x\nAddReg = NoSuch\n").unwrap();
        assert_eq!(
            inf.add_reg_section("nosuch").unwrap_err().to_string(),
            "m.inf line 3: no [nosuch] section, named by an AddReg directive"
        );
    }

    /// Every typed view of `inf`, for the no-panic test.
    fn walk(inf: &Inf) {
        let _ = inf.version();
        let targets = [
            TargetOs::SERVER_2016,
            TargetOs {
                arch: Arch::X86,
                ..TargetOs::SERVER_2016
            },
        ];
        for m in inf.manufacturers().unwrap_or_default() {
            for os in &targets {
                let Ok(ModelsChoice {
                    section: Some(sec), ..
                }) = inf.select_models(&m, os)
                else {
                    continue;
                };
                for d in inf.devices(&sec).unwrap_or_default() {
                    let Some(name) = inf.install_section_name(&d.install_section, os.arch) else {
                        continue;
                    };
                    let Ok(is) = inf.install_section(&name) else {
                        continue;
                    };
                    for c in &is.copy_files {
                        let _ = inf.copy_list(c);
                        let _ = inf.destination(Some(c));
                    }
                    for r in &is.add_reg {
                        for l in inf.add_reg_section(r).unwrap_or_default() {
                            let _ = inf.reg_action(&l);
                        }
                    }
                    if let Ok(ss) = inf.services_section(&format!("{name}.Services")) {
                        for a in ss.add_service {
                            let _ = inf.service_install(&a.install_section);
                        }
                    }
                }
            }
        }
        for f in inf.source_files(Arch::Amd64).values() {
            let _ = inf.source_path(&f.name, Arch::Amd64);
        }
    }

    #[test]
    fn mutated_infs_never_panic() {
        const SPECIAL: &[u8] = b"\"\\;%[],=\n\r \xe9\x00";
        let base = SAMPLE.as_bytes();
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize
        };
        for _ in 0..1500 {
            let mut b = base.to_vec();
            for _ in 0..1 + next() % 6 {
                let at = next() % b.len().max(1);
                match next() % 4 {
                    0 if !b.is_empty() => b[at] = SPECIAL[next() % SPECIAL.len()],
                    1 => b.insert(at, SPECIAL[next() % SPECIAL.len()]),
                    2 if next() % 4 == 0 => b.truncate(at),
                    _ => {
                        let end = (at + next() % 40).min(b.len());
                        b.drain(at..end);
                    }
                }
            }
            if let Ok(inf) = Inf::parse("fuzz.inf", &b) {
                walk(&inf);
            }
            let mut u = vec![0xFF, 0xFE];
            u.extend(b.iter().flat_map(|&c| [c, 0]));
            let _ = Inf::parse("fuzz16.inf", &u);
        }
    }

    #[test]
    fn copy_lists_and_destinations() {
        let inf = Inf::parse(
            "c.inf",
            b"[DestinationDirs]\nDefaultDestDir=12\nsvcfiles=11,sub\n[svcfiles]\nx.dll,src.dll\ny.exe\n\
[SourceDisksNames]\n1=%D%,,,\\amd64\n[SourceDisksFiles]\nx.sys=1\n[SourceDisksFiles.amd64]\nsrc.dll=1,bin\n[Strings]\nD=disk\n",
        )
        .unwrap();
        assert_eq!(
            inf.destination(Some("svcfiles")).unwrap().unwrap(),
            DestDir {
                dirid: 11,
                subdir: "sub".into()
            }
        );
        assert_eq!(inf.destination(Some("other")).unwrap().unwrap().dirid, 12);
        let l = inf.copy_list("svcfiles").unwrap();
        assert_eq!(
            (l[0].dest.as_str(), l[0].source.as_str()),
            ("x.dll", "src.dll")
        );
        assert_eq!(l[1].source, "y.exe");
        assert_eq!(inf.copy_list("@a.sys").unwrap()[0].dest, "a.sys");
        assert_eq!(
            inf.source_path("SRC.dll", Arch::Amd64),
            "amd64\\bin\\SRC.dll"
        );
        assert_eq!(inf.source_path("x.sys", Arch::Amd64), "amd64\\x.sys");
        assert_eq!(inf.source_path("z.sys", Arch::Amd64), "z.sys");
    }
}
