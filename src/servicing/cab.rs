//! Listing and extracting Microsoft cabinet files (package `.cab`s) through the `cab` crate,
//! with every entry name checked before use.
//!
//! Source: the Microsoft Cabinet Format specification (CFFILE szName is a relative path with
//! `\` separators); domain.md section 6 for what package cabs hold.

use std::io::Read;
use std::path::Path;

/// Largest entry extracted into memory: real package payloads stay far below this, and a
/// hostile header cannot make us allocate more.
const MAX_ENTRY_BYTES: u64 = 1 << 31;

/// Errors reading a cabinet.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cabinet {cab}: {source}; the file is damaged or not a cabinet")]
    Open { cab: String, source: std::io::Error },
    #[error("cabinet {cab}: entry {entry:?} has an unsafe name ({why}); refusing to use it")]
    UnsafeName {
        cab: String,
        entry: String,
        why: &'static str,
    },
    #[error("cabinet {cab}: entry {entry:?}: {source}")]
    Entry {
        cab: String,
        entry: String,
        source: std::io::Error,
    },
    #[error(
        "cabinet {cab}: entry {entry:?} is {size} bytes, above the {MAX_ENTRY_BYTES}-byte limit"
    )]
    TooLarge {
        cab: String,
        entry: String,
        size: u64,
    },
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// One file in a cabinet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Name as stored (`\` separators).
    pub name: String,
    pub size: u64,
}

/// Check a stored name: no absolute path, drive letter, empty or `.`/`..` component.
/// Returns the `/`-separated relative path.
pub fn safe_name(name: &str) -> Result<String, &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.contains('\0') {
        return Err("NUL character");
    }
    if name.starts_with('\\') || name.starts_with('/') {
        return Err("absolute path");
    }
    if name.as_bytes().get(1) == Some(&b':') {
        return Err("drive letter");
    }
    if name.contains(':') {
        return Err("colon (drive or stream name)");
    }
    let parts: Vec<&str> = name.split(['\\', '/']).collect();
    for p in &parts {
        if p.is_empty() || *p == "." || *p == ".." {
            return Err("empty, `.` or `..` path component");
        }
    }
    Ok(parts.join("/"))
}

fn open(path: &Path) -> Result<cab::Cabinet<std::fs::File>, Error> {
    let cab = path.display().to_string();
    let f = std::fs::File::open(path).map_err(|source| Error::Open {
        cab: cab.clone(),
        source,
    })?;
    cab::Cabinet::new(f).map_err(|source| Error::Open { cab, source })
}

/// List the files of a cabinet in stored order; every name is checked.
pub fn list(path: &Path) -> Result<Vec<Entry>, Error> {
    let c = open(path)?;
    let mut out = Vec::new();
    for folder in c.folder_entries() {
        for file in folder.file_entries() {
            let name = file.name().to_string();
            safe_name(&name).map_err(|why| Error::UnsafeName {
                cab: path.display().to_string(),
                entry: name.clone(),
                why,
            })?;
            out.push(Entry {
                name,
                size: u64::from(file.uncompressed_size()),
            });
        }
    }
    Ok(out)
}

/// Read every file of a cabinet into memory as (relative `/` path, bytes), sorted by path.
pub fn extract_all(path: &Path) -> Result<Vec<(String, Vec<u8>)>, Error> {
    let entries = list(path)?;
    let mut c = open(path)?;
    let cabname = path.display().to_string();
    let mut out = Vec::new();
    for e in entries {
        if e.size > MAX_ENTRY_BYTES {
            return Err(Error::TooLarge {
                cab: cabname,
                entry: e.name,
                size: e.size,
            });
        }
        let rel = safe_name(&e.name).map_err(|why| Error::UnsafeName {
            cab: cabname.clone(),
            entry: e.name.clone(),
            why,
        })?;
        let entry_err = |source| Error::Entry {
            cab: cabname.clone(),
            entry: e.name.clone(),
            source,
        };
        let mut r = c.read_file(&e.name).map_err(entry_err)?;
        let mut buf = Vec::new();
        r.read_to_end(&mut buf).map_err(|source| Error::Entry {
            cab: cabname.clone(),
            entry: e.name.clone(),
            source,
        })?;
        out.push((rel, buf));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_names() {
        assert_eq!(safe_name("a\\b.manifest").unwrap(), "a/b.manifest");
        assert_eq!(safe_name("update.mum").unwrap(), "update.mum");
        for bad in [
            "",
            "..\\x",
            "a\\..\\..\\x",
            "\\windows\\x",
            "/etc/x",
            "C:\\x",
            "c:x",
            "a\\\\b",
            "a/./b",
        ] {
            assert!(safe_name(bad).is_err(), "{bad:?}");
        }
    }
}
