//! Nano Server installation media: locating `NanoServer/NanoServer.wim`, the package folder
//! and its language folder, and pinning every input file by SHA-256 in a lock file.
//!
//! Source: domain.md section 2 (media layout; one language folder normally exists, chosen
//! with `--language` otherwise). Names match case-insensitively because the media comes from
//! a case-insensitive file system.

use std::path::{Path, PathBuf};

/// Largest lock file accepted: one line per input file, far above any real media.
const MAX_LOCK_BYTES: u64 = 16 << 20;

/// Errors locating or pinning the media.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("media {media}: no {what} found (names are matched case-insensitively); point --media at the root of the installation media")]
    Missing { media: String, what: String },
    #[error("media {media}: several language folders ({found}); choose one with --language")]
    AmbiguousLanguage { media: String, found: String },
    #[error("media {media}: language folder {lang:?} not found (present: {found})")]
    NoSuchLanguage {
        media: String,
        lang: String,
        found: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("media lock: line {line} is malformed ({text:?}); expected `sha256 <64 hex digits> <relative path>`")]
    BadLock { line: usize, text: String },
    #[error("media lock: {file} has SHA-256 {actual}, but the lock expects {expected}; the media changed, re-create the lock only if the change is intended")]
    DigestMismatch {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("media lock: {file} is listed but missing from the media")]
    LockedFileMissing { file: String },
    #[error("media lock: {file} is on the media but not in the lock; re-create the lock if it belongs there")]
    UnlockedFile { file: String },
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The located media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub root: PathBuf,
    pub wim: PathBuf,
    pub packages: PathBuf,
    /// The language folder under `packages`, and its name as written on the media.
    pub language: Option<(String, PathBuf)>,
}

fn entries_sorted(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        v.push(e.map_err(io(dir))?.path());
    }
    v.sort();
    Ok(v)
}

pub(crate) fn find_ci(dir: &Path, name: &str) -> Result<Option<PathBuf>, Error> {
    Ok(entries_sorted(dir)?.into_iter().find(|p| {
        p.file_name()
            .is_some_and(|f| f.to_string_lossy().eq_ignore_ascii_case(name))
    }))
}

impl Media {
    /// Locate the media under `root`; `language` picks a language folder when several exist.
    pub fn open(root: &Path, language: Option<&str>) -> Result<Media, Error> {
        let media = root.display().to_string();
        let missing = |what: &str| Error::Missing {
            media: media.clone(),
            what: what.to_string(),
        };
        let nano = find_ci(root, "NanoServer")?.ok_or_else(|| missing("NanoServer folder"))?;
        let wim = find_ci(&nano, "NanoServer.wim")?
            .ok_or_else(|| missing("NanoServer/NanoServer.wim"))?;
        let packages =
            find_ci(&nano, "Packages")?.ok_or_else(|| missing("NanoServer/Packages folder"))?;
        let langs: Vec<PathBuf> = entries_sorted(&packages)?
            .into_iter()
            .filter(|p| p.is_dir())
            .collect();
        let names: Vec<String> = langs
            .iter()
            .map(|p| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        let language = match language {
            Some(want) => {
                let i = names
                    .iter()
                    .position(|n| n.eq_ignore_ascii_case(want))
                    .ok_or_else(|| Error::NoSuchLanguage {
                        media: media.clone(),
                        lang: want.to_string(),
                        found: names.join(", "),
                    })?;
                Some((names[i].clone(), langs[i].clone()))
            }
            None => match langs.len() {
                0 => None,
                1 => Some((names[0].clone(), langs[0].clone())),
                _ => {
                    return Err(Error::AmbiguousLanguage {
                        media,
                        found: names.join(", "),
                    })
                }
            },
        };
        Ok(Media {
            root: root.to_path_buf(),
            wim,
            packages,
            language,
        })
    }
}

/// Every regular file under `root`, as sorted `/`-separated relative paths.
pub(crate) fn all_files(root: &Path) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for p in entries_sorted(&dir)? {
            let meta = std::fs::symlink_metadata(&p).map_err(io(&p))?;
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() {
                let rel = p.strip_prefix(root).unwrap_or(&p);
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(parts.join("/"));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn sha256_file(path: &Path) -> Result<String, Error> {
    crate::core::checksum::sha256_file(path, &|_| {})
        .map(|(_, hex)| hex)
        .map_err(io(path))
}

/// The lock text for every file under `root`: one `sha256 <hex> <path>` line per file, sorted.
pub fn lock(root: &Path) -> Result<String, Error> {
    let mut s = String::from("# nanoforge media lock: SHA-256 of every input file\n");
    for rel in all_files(root)? {
        s.push_str(&format!(
            "sha256 {} {}\n",
            sha256_file(&root.join(&rel))?,
            rel
        ));
    }
    Ok(s)
}

fn parse_lock(text: &str) -> Result<Vec<(String, String)>, Error> {
    let mut v = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || Error::BadLock {
            line: i + 1,
            text: line.to_string(),
        };
        let rest = line.strip_prefix("sha256 ").ok_or_else(bad)?;
        let (hex, path) = rest.split_once(' ').ok_or_else(bad)?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) || path.is_empty() {
            return Err(bad());
        }
        v.push((path.to_string(), hex.to_ascii_lowercase()));
    }
    Ok(v)
}

/// Check every file under `root` against the lock text: a changed digest, a missing file or
/// an unlisted file is refused.
pub fn verify_lock(root: &Path, lock_text: &str) -> Result<(), Error> {
    let want = parse_lock(lock_text)?;
    let have = all_files(root)?;
    for (rel, expected) in &want {
        let p = root.join(rel);
        if !p.is_file() {
            return Err(Error::LockedFileMissing { file: rel.clone() });
        }
        let actual = sha256_file(&p)?;
        if &actual != expected {
            return Err(Error::DigestMismatch {
                file: rel.clone(),
                expected: expected.clone(),
                actual,
            });
        }
    }
    for rel in have {
        if !want.iter().any(|(w, _)| *w == rel) {
            return Err(Error::UnlockedFile { file: rel });
        }
    }
    Ok(())
}

/// Read a lock file, refusing absurd sizes.
pub fn read_lock(path: &Path) -> Result<String, Error> {
    let len = std::fs::metadata(path).map_err(io(path))?.len();
    if len > MAX_LOCK_BYTES {
        return Err(Error::BadLock {
            line: 0,
            text: format!("file is {len} bytes, limit {MAX_LOCK_BYTES}"),
        });
    }
    std::fs::read_to_string(path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(tag: &str, langs: &[&str]) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("nanoforge-media-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("nanoserver/PACKAGES")).unwrap();
        std::fs::write(root.join("nanoserver/NanoServer.WIM"), b"wim").unwrap();
        std::fs::write(
            root.join("nanoserver/PACKAGES/Microsoft-NanoServer-Guest-Package.cab"),
            b"cab",
        )
        .unwrap();
        for l in langs {
            std::fs::create_dir_all(root.join("nanoserver/PACKAGES").join(l)).unwrap();
        }
        root
    }

    #[test]
    fn finds_media_case_insensitively_and_one_language() {
        let root = media("one", &["en-US"]);
        let m = Media::open(&root, None).unwrap();
        assert!(m.wim.ends_with("NanoServer.WIM"));
        assert_eq!(m.language.unwrap().0, "en-US");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn several_languages_need_a_choice() {
        let root = media("two", &["de-DE", "en-US"]);
        let e = Media::open(&root, None).unwrap_err().to_string();
        assert!(
            e.contains("--language") && e.contains("de-DE, en-US"),
            "{e}"
        );
        assert_eq!(
            Media::open(&root, Some("en-us"))
                .unwrap()
                .language
                .unwrap()
                .0,
            "en-US"
        );
        let e = Media::open(&root, Some("fr-FR")).unwrap_err().to_string();
        assert!(e.contains("fr-FR"), "{e}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn missing_wim_is_named() {
        let root = media("nowim", &[]);
        std::fs::remove_file(root.join("nanoserver/NanoServer.WIM")).unwrap();
        let e = Media::open(&root, None).unwrap_err().to_string();
        assert!(e.contains("NanoServer.wim"), "{e}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn lock_is_deterministic_and_detects_a_changed_byte() {
        let root = media("lock", &["en-US"]);
        let a = lock(&root).unwrap();
        assert_eq!(a, lock(&root).unwrap());
        assert!(a.contains("sha256 ") && a.contains("nanoserver/NanoServer.WIM"));
        verify_lock(&root, &a).unwrap();
        std::fs::write(root.join("nanoserver/NanoServer.WIM"), b"wiM").unwrap();
        let e = verify_lock(&root, &a).unwrap_err().to_string();
        let wim_digest = sha256_file(&root.join("nanoserver/NanoServer.WIM")).unwrap();
        assert!(
            e.contains("nanoserver/NanoServer.WIM") && e.contains(&wim_digest),
            "{e}"
        );
        std::fs::write(root.join("extra.txt"), b"x").unwrap();
        std::fs::write(root.join("nanoserver/NanoServer.WIM"), b"wim").unwrap();
        let e = verify_lock(&root, &a).unwrap_err().to_string();
        assert!(e.contains("extra.txt"), "{e}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn malformed_lock_line_is_refused() {
        let e = parse_lock("sha256 xyz a\n").unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }
}
