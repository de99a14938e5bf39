//! Known Nano Server packages: the catalog embedded from `packages-manifest/*.toml`.
//!
//! Source: domain.md sections 2 and 6 (package short names, cab base names, dependencies,
//! edition limits, language-pack naming per release). Each file is validated on load.

use std::collections::{BTreeMap, BTreeSet};

/// Every manifest file, embedded so the binary needs no data directory.
pub const EMBEDDED: &[(&str, &str)] = &[
    (
        "BootFromWim.toml",
        include_str!("../../packages-manifest/BootFromWim.toml"),
    ),
    (
        "Compute.toml",
        include_str!("../../packages-manifest/Compute.toml"),
    ),
    (
        "Containers.toml",
        include_str!("../../packages-manifest/Containers.toml"),
    ),
    ("DCB.toml", include_str!("../../packages-manifest/DCB.toml")),
    ("DNS.toml", include_str!("../../packages-manifest/DNS.toml")),
    ("DSC.toml", include_str!("../../packages-manifest/DSC.toml")),
    (
        "Defender.toml",
        include_str!("../../packages-manifest/Defender.toml"),
    ),
    (
        "FailoverCluster.toml",
        include_str!("../../packages-manifest/FailoverCluster.toml"),
    ),
    (
        "Guest.toml",
        include_str!("../../packages-manifest/Guest.toml"),
    ),
    (
        "Host.toml",
        include_str!("../../packages-manifest/Host.toml"),
    ),
    ("IIS.toml", include_str!("../../packages-manifest/IIS.toml")),
    (
        "NPDS.toml",
        include_str!("../../packages-manifest/NPDS.toml"),
    ),
    (
        "OEM-Drivers.toml",
        include_str!("../../packages-manifest/OEM-Drivers.toml"),
    ),
    (
        "ReverseForwarders.toml",
        include_str!("../../packages-manifest/ReverseForwarders.toml"),
    ),
    (
        "SCVMM-Compute.toml",
        include_str!("../../packages-manifest/SCVMM-Compute.toml"),
    ),
    (
        "SCVMM.toml",
        include_str!("../../packages-manifest/SCVMM.toml"),
    ),
    (
        "SecureStartup.toml",
        include_str!("../../packages-manifest/SecureStartup.toml"),
    ),
    (
        "ShieldedVM.toml",
        include_str!("../../packages-manifest/ShieldedVM.toml"),
    ),
    (
        "Storage.toml",
        include_str!("../../packages-manifest/Storage.toml"),
    ),
];

/// Release names a package may exist in.
pub const RELEASES: &[&str] = &["TP3", "TP4", "TP5", "RTM"];
/// Editions a package may be limited to.
pub const EDITIONS: &[&str] = &["Standard", "Datacenter"];

/// Errors loading the package catalog.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("package manifest {file}: {msg}; fix the TOML file")]
    Parse { file: String, msg: String },
    #[error("package manifest {file}: package {name:?} is already defined in {first}; give each package one file")]
    Duplicate {
        file: String,
        name: String,
        first: String,
    },
    #[error("package manifest {file}: release {release:?} is unknown (expected one of TP3, TP4, TP5, RTM)")]
    BadRelease { file: String, release: String },
    #[error(
        "package manifest {file}: edition {edition:?} is unknown (expected Standard or Datacenter)"
    )]
    BadEdition { file: String, edition: String },
    #[error("package manifest {file}: dependency {dep:?} names no known package; add its manifest or fix the name")]
    UnknownDependency { file: String, dep: String },
    #[error("package manifest {file}: language-pack rule for {release} is {rule:?}, which lacks {{lang}} or {{cab}}")]
    BadLangRule {
        file: String,
        release: String,
        rule: String,
    },
    #[error(
        "package manifest {file}: package {name:?} depends on itself, directly or through others"
    )]
    Cycle { file: String, name: String },
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// One known package as written in its manifest file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct KnownPackage {
    /// Short name used on the command line (`Compute`).
    pub name: String,
    /// One-line description.
    pub description: String,
    /// Base name of the cab file, without `.cab`.
    pub cab: String,
    /// Releases the package exists in.
    pub releases: Vec<String>,
    /// Short names of packages that must be installed first.
    pub depends: Vec<String>,
    /// Editions the package is limited to; empty means every edition.
    pub editions: Vec<String>,
    /// Language-pack path per release, relative to the `NanoServer` folder, with `{lang}` and
    /// `{cab}` placeholders.
    pub lang_pack: BTreeMap<String, String>,
    /// Cab base names of releases whose name differs from `cab` (e.g. TP4's
    /// `Microsoft-Windows-Server-SCVMM-Package`).
    #[serde(default)]
    pub cab_by_release: BTreeMap<String, String>,
}

impl KnownPackage {
    /// The cab base name in `release`.
    pub fn cab_for(&self, release: &str) -> &str {
        self.cab_by_release
            .get(release)
            .map(String::as_str)
            .unwrap_or(&self.cab)
    }

    /// The language-pack path for `release` and `lang`, if the manifest gives a rule.
    pub fn lang_pack_path(&self, release: &str, lang: &str) -> Option<String> {
        self.lang_pack.get(release).map(|r| {
            r.replace("{lang}", lang)
                .replace("{cab}", self.cab_for(release))
        })
    }

    /// Whether the package may be installed into `edition`.
    pub fn allows_edition(&self, edition: &str) -> bool {
        self.editions.is_empty()
            || self
                .editions
                .iter()
                .any(|e| e.eq_ignore_ascii_case(edition))
    }
}

/// The validated set of known packages, sorted by short name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    packages: BTreeMap<String, KnownPackage>,
}

impl Catalog {
    /// The catalog embedded in the binary.
    pub fn embedded() -> Result<Catalog, Error> {
        Catalog::from_files(EMBEDDED.iter().map(|(f, t)| (f.to_string(), t.to_string())))
    }

    /// Load and validate manifests given as (file name, TOML text) pairs.
    pub fn from_files(files: impl IntoIterator<Item = (String, String)>) -> Result<Catalog, Error> {
        let mut packages: BTreeMap<String, KnownPackage> = BTreeMap::new();
        let mut origin: BTreeMap<String, String> = BTreeMap::new();
        for (file, text) in files {
            let p: KnownPackage = toml::from_str(&text).map_err(|e| Error::Parse {
                file: file.clone(),
                msg: e.to_string().replace('\n', " "),
            })?;
            for r in p
                .releases
                .iter()
                .chain(p.lang_pack.keys())
                .chain(p.cab_by_release.keys())
            {
                if !RELEASES.contains(&r.as_str()) {
                    return Err(Error::BadRelease {
                        file,
                        release: r.clone(),
                    });
                }
            }
            for e in &p.editions {
                if !EDITIONS.contains(&e.as_str()) {
                    return Err(Error::BadEdition {
                        file,
                        edition: e.clone(),
                    });
                }
            }
            for (release, rule) in &p.lang_pack {
                if !rule.contains("{lang}") || !rule.contains("{cab}") {
                    return Err(Error::BadLangRule {
                        file,
                        release: release.clone(),
                        rule: rule.clone(),
                    });
                }
            }
            let key = p.name.to_ascii_lowercase();
            if let Some(first) = origin.get(&key) {
                return Err(Error::Duplicate {
                    file,
                    name: p.name,
                    first: first.clone(),
                });
            }
            origin.insert(key.clone(), file);
            packages.insert(key, p);
        }
        for (key, p) in &packages {
            for d in &p.depends {
                if !packages.contains_key(&d.to_ascii_lowercase()) {
                    return Err(Error::UnknownDependency {
                        file: origin[key].clone(),
                        dep: d.clone(),
                    });
                }
            }
        }
        let cat = Catalog { packages };
        for (key, p) in &cat.packages {
            let mut seen = BTreeSet::new();
            if cat.reaches(key, key, &mut seen) {
                return Err(Error::Cycle {
                    file: origin[key].clone(),
                    name: p.name.clone(),
                });
            }
        }
        Ok(cat)
    }

    fn reaches(&self, from: &str, target: &str, seen: &mut BTreeSet<String>) -> bool {
        let Some(p) = self.packages.get(from) else {
            return false;
        };
        for d in &p.depends {
            let d = d.to_ascii_lowercase();
            if d == target {
                return true;
            }
            if seen.insert(d.clone()) && self.reaches(&d, target, seen) {
                return true;
            }
        }
        false
    }

    /// Look up a package by short name (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&KnownPackage> {
        self.packages.get(&name.to_ascii_lowercase())
    }

    /// Find the package whose cab base name is `cab` (case-insensitive, `.cab` optional).
    pub fn by_cab(&self, cab: &str) -> Option<&KnownPackage> {
        let base = cab
            .strip_suffix(".cab")
            .or_else(|| cab.strip_suffix(".CAB"))
            .unwrap_or(cab);
        self.packages.values().find(|p| {
            p.cab.eq_ignore_ascii_case(base)
                || p.cab_by_release
                    .values()
                    .any(|c| c.eq_ignore_ascii_case(base))
        })
    }

    /// All packages, sorted by short name.
    pub fn iter(&self) -> impl Iterator<Item = &KnownPackage> {
        self.packages.values()
    }

    /// Number of packages.
    pub fn len(&self) -> usize {
        self.packages.len()
    }

    /// Whether the catalog is empty.
    pub fn is_empty(&self) -> bool {
        self.packages.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(file: &str, text: &str) -> Result<Catalog, Error> {
        Catalog::from_files([(file.to_string(), text.to_string())])
    }

    const MIN: &str = r#"
name = "A"
description = "a"
cab = "Microsoft-NanoServer-A-Package"
releases = ["RTM"]
depends = []
editions = []
[lang_pack]
RTM = "Packages/{lang}/{cab}_{lang}.cab"
"#;

    #[test]
    fn embedded_catalog_is_valid_and_complete() {
        let c = Catalog::embedded().unwrap();
        assert_eq!(c.len(), 19);
        for n in [
            "Guest",
            "Compute",
            "OEM-Drivers",
            "Containers",
            "Storage",
            "FailoverCluster",
            "Defender",
            "DCB",
            "DNS",
            "DSC",
            "IIS",
            "NPDS",
            "SCVMM",
            "SCVMM-Compute",
            "Host",
            "SecureStartup",
            "ShieldedVM",
            "BootFromWim",
            "ReverseForwarders",
        ] {
            let p = c.get(n).unwrap_or_else(|| panic!("{n} missing"));
            assert_eq!(p.name, n);
        }
        assert_eq!(c.get("NPDS").unwrap().depends, ["Defender"]);
        assert_eq!(
            c.get("SCVMM-Compute").unwrap().depends,
            ["Compute", "SCVMM"]
        );
        assert!(!c.get("ShieldedVM").unwrap().allows_edition("Standard"));
        assert!(c.get("ShieldedVM").unwrap().allows_edition("Datacenter"));
        assert_eq!(
            c.get("ReverseForwarders").unwrap().cab,
            "Microsoft-OneCore-ReverseForwarders-Package"
        );
        assert_eq!(
            c.by_cab("microsoft-nanoserver-iis-package.cab")
                .unwrap()
                .name,
            "IIS"
        );
        let g = c.get("Guest").unwrap();
        assert_eq!(
            g.lang_pack_path("TP4", "en-us").unwrap(),
            "Packages/en-us/Microsoft-NanoServer-Guest-Package.cab"
        );
        assert_eq!(
            g.lang_pack_path("RTM", "en-us").unwrap(),
            "Packages/en-us/Microsoft-NanoServer-Guest-Package_en-us.cab"
        );
    }

    #[test]
    fn every_embedded_file_parses_alone_and_names_itself() {
        for (file, text) in EMBEDDED {
            let p: KnownPackage = toml::from_str(text).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(format!("{}.toml", p.name), *file);
            assert!(p.cab.ends_with("-Package"), "{file}");
        }
    }

    #[test]
    fn every_manifest_file_is_embedded_verbatim() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packages-manifest");
        let mut on_disk: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&p).unwrap())
            })
            .collect();
        on_disk.sort();
        let embedded: Vec<(String, String)> = EMBEDDED
            .iter()
            .map(|(f, t)| (f.to_string(), t.to_string()))
            .collect();
        assert_eq!(
            on_disk, embedded,
            "add every packages-manifest file to EMBEDDED, sorted"
        );
    }

    #[test]
    fn unknown_field_is_rejected() {
        let e = one("a.toml", &format!("{MIN}\nextra = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("a.toml") && e.contains("extra"), "{e}");
    }

    #[test]
    fn bad_release_is_rejected() {
        let e = one("a.toml", &MIN.replace("[\"RTM\"]", "[\"TP9\"]"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("TP9"), "{e}");
    }

    #[test]
    fn unknown_dependency_is_rejected() {
        let e = one(
            "a.toml",
            &MIN.replace("depends = []", "depends = [\"Nope\"]"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("Nope") && e.contains("a.toml"), "{e}");
    }

    #[test]
    fn duplicate_name_is_rejected() {
        let e = Catalog::from_files([
            ("a.toml".to_string(), MIN.to_string()),
            ("b.toml".to_string(), MIN.to_string()),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("b.toml") && e.contains("a.toml"), "{e}");
    }

    #[test]
    fn dependency_cycle_is_rejected() {
        let e = one("a.toml", &MIN.replace("depends = []", "depends = [\"A\"]"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("depends on itself"), "{e}");
    }

    #[test]
    fn bad_edition_and_rule_are_rejected() {
        let e = one(
            "a.toml",
            &MIN.replace("editions = []", "editions = [\"Home\"]"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("Home"));
        let e = one(
            "a.toml",
            &MIN.replace("_{lang}.cab", ".cab").replace("{lang}", "x"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("lacks"));
    }
}
