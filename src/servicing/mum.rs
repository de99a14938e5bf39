//! Package manifests (`update.mum`): the package identity, the parent of a language pack and
//! the components and packages it lists. Component manifest parsing is not here yet.
//!
//! Source: domain.md section 6 (namespace `urn:schemas-microsoft-com:asm.v3`, `assemblyIdentity`
//! attributes) and facts-cbs.md section 5.1 (identity string `name~pkt~arch~language~version`).

/// Largest manifest accepted: real update.mum files are a few hundred kilobytes.
const MAX_MUM_BYTES: usize = 64 << 20;

/// Errors reading a package manifest.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{file}: compressed manifest (DCM\\x01 header) is not supported; expand it on Windows first")]
    Compressed { file: String },
    #[error("{file}: {size} bytes, above the {MAX_MUM_BYTES}-byte limit")]
    TooLarge { file: String, size: usize },
    #[error("{file}: not UTF-8 or UTF-16 XML text")]
    Encoding { file: String },
    #[error("{file}: XML error: {msg}")]
    Xml { file: String, msg: String },
    #[error("{file}: no <assemblyIdentity> under <assembly>; not a package manifest")]
    NoIdentity { file: String },
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// An `<assemblyIdentity>` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Identity {
    pub name: String,
    pub version: String,
    pub processor_architecture: String,
    pub language: String,
    pub public_key_token: String,
}

impl Identity {
    /// `name~pkt~arch~language~version`; `neutral` language is written empty.
    pub fn package_string(&self) -> String {
        let lang = if self.language.eq_ignore_ascii_case("neutral") {
            ""
        } else {
            &self.language
        };
        format!(
            "{}~{}~{}~{}~{}",
            self.name, self.public_key_token, self.processor_architecture, lang, self.version
        )
    }
}

/// What `update.mum` declares.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PackageManifest {
    pub identity: Identity,
    /// The package a language pack belongs to (`<parent>` identity), if any.
    pub parent: Option<Identity>,
    /// Identities of the components and packages listed under `<update>`.
    pub components: Vec<Identity>,
}

fn identity_of(n: roxmltree::Node) -> Identity {
    let a = |k: &str| n.attribute(k).unwrap_or("").to_string();
    Identity {
        name: a("name"),
        version: a("version"),
        processor_architecture: a("processorArchitecture"),
        language: a("language"),
        public_key_token: a("publicKeyToken"),
    }
}

/// Decode manifest bytes (UTF-8 with or without BOM, or UTF-16LE with BOM).
pub fn decode(file: &str, bytes: &[u8]) -> Result<String, Error> {
    if bytes.starts_with(b"DCM\x01") {
        return Err(Error::Compressed {
            file: file.to_string(),
        });
    }
    if bytes.len() > MAX_MUM_BYTES {
        return Err(Error::TooLarge {
            file: file.to_string(),
            size: bytes.len(),
        });
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        if rest.len() % 2 != 0 {
            return Err(Error::Encoding {
                file: file.to_string(),
            });
        }
        let units: Vec<u16> = rest
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        return String::from_utf16(&units).map_err(|_| Error::Encoding {
            file: file.to_string(),
        });
    }
    let b = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(bytes);
    String::from_utf8(b.to_vec()).map_err(|_| Error::Encoding {
        file: file.to_string(),
    })
}

/// Parse `update.mum` bytes; `file` names it in errors.
pub fn parse_package(file: &str, bytes: &[u8]) -> Result<PackageManifest, Error> {
    let text = decode(file, bytes)?;
    let doc = roxmltree::Document::parse(&text).map_err(|e| Error::Xml {
        file: file.to_string(),
        msg: e.to_string(),
    })?;
    let root = doc.root_element();
    let id = root
        .children()
        .find(|n| n.has_tag_name("assemblyIdentity") || n.tag_name().name() == "assemblyIdentity")
        .ok_or_else(|| Error::NoIdentity {
            file: file.to_string(),
        })?;
    let mut m = PackageManifest {
        identity: identity_of(id),
        ..Default::default()
    };
    for n in root.descendants().filter(|n| n.is_element()) {
        let tag = n.tag_name().name();
        if tag == "parent" {
            if let Some(pid) = n
                .children()
                .find(|c| c.tag_name().name() == "assemblyIdentity")
            {
                m.parent = Some(identity_of(pid));
            }
        }
        if tag == "update" {
            for c in n
                .descendants()
                .filter(|c| c.tag_name().name() == "assemblyIdentity")
            {
                m.components.push(identity_of(c));
            }
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LANG: &str = r#"<?xml version="1.0" encoding="utf-8" standalone="yes"?>
<assembly xmlns="urn:schemas-microsoft-com:asm.v3" manifestVersion="1.0">
  <assemblyIdentity name="Microsoft-NanoServer-IIS-Feature-Package" version="10.0.14393.0" processorArchitecture="amd64" language="en-US" publicKeyToken="31bf3856ad364e35"/>
  <package identifier="IIS" releaseType="Feature Pack">
    <parent buildCompare="EQ" integrate="separate" disposition="detect">
      <assemblyIdentity name="Microsoft-NanoServer-IIS-Feature-Package" version="10.0.14393.0" processorArchitecture="amd64" language="neutral" publicKeyToken="31bf3856ad364e35"/>
    </parent>
    <update name="iis-lang">
      <component>
        <assemblyIdentity name="Microsoft-Windows-IIS-Resources" version="10.0.14393.0" processorArchitecture="amd64" language="en-US" publicKeyToken="31bf3856ad364e35" versionScope="nonSxS"/>
      </component>
    </update>
  </package>
</assembly>"#;

    #[test]
    fn language_pack_identity_parent_and_components() {
        let m = parse_package("update.mum", LANG.as_bytes()).unwrap();
        assert_eq!(
            m.identity.package_string(),
            "Microsoft-NanoServer-IIS-Feature-Package~31bf3856ad364e35~amd64~en-US~10.0.14393.0"
        );
        assert_eq!(m.parent.unwrap().language, "neutral");
        assert_eq!(m.components.len(), 1);
        assert_eq!(m.components[0].name, "Microsoft-Windows-IIS-Resources");
    }

    #[test]
    fn utf16_and_dcm_and_garbage() {
        let mut b = vec![0xFF, 0xFE];
        for u in LANG.replace("utf-8", "utf-16").encode_utf16() {
            b.extend_from_slice(&u.to_le_bytes());
        }
        assert_eq!(
            parse_package("x.mum", &b).unwrap().identity.language,
            "en-US"
        );
        let e = parse_package("a.manifest", b"DCM\x01PA30")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a.manifest") && e.contains("DCM"), "{e}");
        let e = parse_package("u.mum", b"<assembly><x/></assembly>")
            .unwrap_err()
            .to_string();
        assert!(e.contains("u.mum"), "{e}");
        assert!(parse_package("v.mum", b"<assembly").is_err());
    }
}
