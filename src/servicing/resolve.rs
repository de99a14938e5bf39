//! Turning a request for package short names into the ordered list of cab files to install.
//!
//! Source: domain.md sections 2 and 6: every package is installed neutral first, then its
//! language pack; both must exist or the build stops before writing anything; dependencies
//! (NPDS needs Defender, SCVMM-Compute needs Compute and SCVMM) come first; edition limits apply.

use super::catalog::{Catalog, KnownPackage};
use super::media::{find_ci, Media};
use std::path::PathBuf;

/// Errors resolving a package request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("package {0:?} is not a known Nano Server package; `nanoforge packages list` shows the known names")]
    Unknown(String),
    #[error("package {name} is limited to {allowed} editions, but the image is {edition}")]
    Edition {
        name: String,
        allowed: String,
        edition: String,
    },
    #[error("package {name} needs {dep}; add {dep} to the package list")]
    MissingDependency { name: String, dep: String },
    #[error("package {name} does not exist in release {release} (known in {known})")]
    Release {
        name: String,
        release: String,
        known: String,
    },
    #[error("package {name}: neutral cab {cab}.cab not found in {dir}")]
    NoNeutral {
        name: String,
        cab: String,
        dir: String,
    },
    #[error("package {name}: language pack {file} not found in {dir}; the media must hold both the neutral package and its language pack")]
    NoLanguagePack {
        name: String,
        file: String,
        dir: String,
    },
    #[error("package {name}: the media has no language folder under Packages")]
    NoLanguageFolder { name: String },
    #[error(transparent)]
    Media(#[from] super::media::Error),
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// What to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Short names as given by the user.
    pub packages: Vec<String>,
    /// `Standard` or `Datacenter`.
    pub edition: String,
    /// `TP3`, `TP4`, `TP5` or `RTM`.
    pub release: String,
}

/// Whether a resolved cab is the neutral package or its language pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Neutral,
    LanguagePack,
}

/// One cab to install, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPackage {
    pub name: String,
    pub part: Part,
    pub path: PathBuf,
}

/// Order the requested packages (dependencies first, each once, neutral before language pack)
/// and find their cabs on the media. Dependencies are not added silently: a missing one is an
/// error naming it.
pub fn resolve(
    request: &Request,
    catalog: &Catalog,
    media: &Media,
) -> Result<Vec<ResolvedPackage>, Error> {
    let mut wanted: Vec<&KnownPackage> = Vec::new();
    for n in &request.packages {
        let p = catalog.get(n).ok_or_else(|| Error::Unknown(n.clone()))?;
        if !wanted.iter().any(|w| w.name == p.name) {
            wanted.push(p);
        }
    }
    for p in &wanted {
        if !p.allows_edition(&request.edition) {
            return Err(Error::Edition {
                name: p.name.clone(),
                allowed: p.editions.join("/"),
                edition: request.edition.clone(),
            });
        }
        if !p
            .releases
            .iter()
            .any(|r| r.eq_ignore_ascii_case(&request.release))
        {
            return Err(Error::Release {
                name: p.name.clone(),
                release: request.release.clone(),
                known: p.releases.join(", "),
            });
        }
        for d in &p.depends {
            if !wanted.iter().any(|w| w.name.eq_ignore_ascii_case(d)) {
                return Err(Error::MissingDependency {
                    name: p.name.clone(),
                    dep: d.clone(),
                });
            }
        }
    }
    // Depth-first topological order; the catalog has already refused cycles.
    let mut order: Vec<&KnownPackage> = Vec::new();
    fn visit<'a>(p: &'a KnownPackage, catalog: &'a Catalog, order: &mut Vec<&'a KnownPackage>) {
        if order.iter().any(|o| o.name == p.name) {
            return;
        }
        for d in &p.depends {
            if let Some(dp) = catalog.get(d) {
                visit(dp, catalog, order);
            }
        }
        order.push(p);
    }
    for p in &wanted {
        visit(p, catalog, &mut order);
    }
    let mut out = Vec::new();
    for p in order {
        let cab = p.cab_for(&request.release);
        let neutral =
            find_ci(&media.packages, &format!("{cab}.cab"))?.ok_or_else(|| Error::NoNeutral {
                name: p.name.clone(),
                cab: cab.to_string(),
                dir: media.packages.display().to_string(),
            })?;
        let (lang, dir) = media
            .language
            .clone()
            .ok_or_else(|| Error::NoLanguageFolder {
                name: p.name.clone(),
            })?;
        let rel = p
            .lang_pack_path(&request.release, &lang)
            .unwrap_or_else(|| format!("{cab}_{lang}.cab"));
        let file = rel.rsplit('/').next().unwrap_or(&rel).to_string();
        let lp = find_ci(&dir, &file)?.ok_or_else(|| Error::NoLanguagePack {
            name: p.name.clone(),
            file: file.clone(),
            dir: dir.display().to_string(),
        })?;
        out.push(ResolvedPackage {
            name: p.name.clone(),
            part: Part::Neutral,
            path: neutral,
        });
        out.push(ResolvedPackage {
            name: p.name.clone(),
            part: Part::LanguagePack,
            path: lp,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(tag: &str, names: &[&str], release_rtm: bool) -> (PathBuf, Media) {
        let root =
            std::env::temp_dir().join(format!("nanoforge-resolve-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let pk = root.join("NanoServer/Packages");
        std::fs::create_dir_all(pk.join("en-US")).unwrap();
        std::fs::write(root.join("NanoServer/NanoServer.wim"), b"w").unwrap();
        let cat = Catalog::embedded().unwrap();
        for n in names {
            let cab = &cat.get(n).unwrap().cab;
            std::fs::write(pk.join(format!("{cab}.cab")), b"c").unwrap();
            let lp = if release_rtm {
                format!("{cab}_en-US.cab")
            } else {
                format!("{cab}.cab")
            };
            std::fs::write(pk.join("en-US").join(lp), b"l").unwrap();
        }
        let m = Media::open(&root, None).unwrap();
        (root, m)
    }

    fn req(p: &[&str], edition: &str, release: &str) -> Request {
        Request {
            packages: p.iter().map(|s| s.to_string()).collect(),
            edition: edition.into(),
            release: release.into(),
        }
    }

    #[test]
    fn orders_dependencies_first_neutral_before_language() {
        let (root, m) = setup("order", &["Compute", "SCVMM", "SCVMM-Compute"], true);
        let cat = Catalog::embedded().unwrap();
        let r = resolve(
            &req(
                &["SCVMM-Compute", "Compute", "SCVMM", "compute"],
                "Standard",
                "RTM",
            ),
            &cat,
            &m,
        )
        .unwrap();
        let seq: Vec<(String, Part)> = r.iter().map(|x| (x.name.clone(), x.part)).collect();
        assert_eq!(seq.len(), 6);
        let pos = |n: &str, p: Part| seq.iter().position(|x| x.0 == n && x.1 == p).unwrap();
        assert!(pos("Compute", Part::LanguagePack) < pos("SCVMM-Compute", Part::Neutral));
        assert!(pos("SCVMM", Part::LanguagePack) < pos("SCVMM-Compute", Part::Neutral));
        for n in ["Compute", "SCVMM", "SCVMM-Compute"] {
            assert_eq!(pos(n, Part::Neutral) + 1, pos(n, Part::LanguagePack));
        }
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn tp4_language_pack_has_the_neutral_file_name() {
        let (root, m) = setup("tp4", &["Guest"], false);
        let cat = Catalog::embedded().unwrap();
        let r = resolve(&req(&["Guest"], "Standard", "TP4"), &cat, &m).unwrap();
        assert!(r[1]
            .path
            .ends_with("en-US/Microsoft-NanoServer-Guest-Package.cab"));
        let e = resolve(&req(&["Guest"], "Standard", "RTM"), &cat, &m)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("Microsoft-NanoServer-Guest-Package_en-US.cab"),
            "{e}"
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn clear_errors() {
        let (root, m) = setup("errs", &["Defender", "NPDS", "ShieldedVM"], true);
        let cat = Catalog::embedded().unwrap();
        let e = resolve(&req(&["Nope"], "Standard", "RTM"), &cat, &m)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"Nope\""), "{e}");
        let e = resolve(&req(&["ShieldedVM"], "Standard", "RTM"), &cat, &m)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Datacenter") && e.contains("Standard"), "{e}");
        resolve(&req(&["ShieldedVM"], "Datacenter", "RTM"), &cat, &m).unwrap();
        let e = resolve(&req(&["NPDS"], "Standard", "RTM"), &cat, &m)
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs Defender"), "{e}");
        let e = resolve(&req(&["Guest"], "Standard", "RTM"), &cat, &m)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Microsoft-NanoServer-Guest-Package.cab"), "{e}");
        std::fs::remove_file(
            root.join("NanoServer/Packages/en-US/Microsoft-NanoServer-Defender-Package_en-US.cab"),
        )
        .unwrap();
        let e = resolve(&req(&["Defender"], "Standard", "RTM"), &cat, &m)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("language pack") && e.contains("Defender-Package_en-US.cab"),
            "{e}"
        );
        std::fs::remove_dir_all(root).unwrap();
    }
}
