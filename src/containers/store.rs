//! The container host's base image store, as `Install-ContainerOSImage` (Windows Server
//! 2016 TP3–TP5 Containers module) left it: per image a folder
//! `ProgramData\Microsoft\Windows\Images\CN=Microsoft_<Name>_<Version>\` holding `Files\`,
//! `BaseOs\` (utility VM image), `Hives\`, `version.wcx` and `metadata.json`.
//!
//! The encodings below (two CRLF lines in the OEM code page for version.wcx; UTF-8 JSON
//! without BOM with exactly five keys and a trailing CRLF for metadata.json; the .NET "o"
//! round-trip time format) are those recorded in the project's domain notes, section 7.

use crate::core::time::{civil, FILETIME_UNIX_DIFF_SECS};

/// Folder of the store, relative to the volume root.
pub const STORE_DIR: &str = "ProgramData\\Microsoft\\Windows\\Images";

/// Hive copies: (source under `Files\Windows\System32\config\`, name under `Hives\`).
pub const HIVE_COPIES: [(&str, &str); 5] = [
    ("SYSTEM", "System_Base"),
    ("SOFTWARE", "Software_Base"),
    ("SAM", "Sam_Base"),
    ("SECURITY", "Security_Base"),
    ("DEFAULT", "DefaultUser_Base"),
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("base image name '{0}' cannot name a store folder: it must be non-empty and hold no \\ / : * ? \" < > | characters")]
    BadName(String),
    #[error(
        "base image edition id '{0}' cannot be written to version.wcx: it must be printable ASCII"
    )]
    BadEdition(String),
}

/// The facts of a base image that the store's files are made of (from WIM image 1's XML).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseImageFacts {
    /// Image name, e.g. `NanoServer`.
    pub name: String,
    /// (major, minor, build, service pack build).
    pub version: (u32, u32, u32, u32),
    /// Edition id, e.g. `ServerDatacenterNano`.
    pub edition_id: String,
    /// Total bytes of the image.
    pub total_bytes: u64,
    /// Creation time, FILETIME (100 ns ticks since 1601).
    pub creation_time: u64,
}

impl BaseImageFacts {
    /// `10.0.10586.8`
    pub fn version_string(&self) -> String {
        let (a, b, c, d) = self.version;
        format!("{a}.{b}.{c}.{d}")
    }

    /// `CN=Microsoft_NanoServer_10.0.10586.8`
    pub fn store_name(&self) -> Result<String, Error> {
        let bad = |c: char| {
            matches!(c, '\\' | '/' | ':' | '*' | '?' | '"' | '<' | '>' | '|') || c.is_control()
        };
        if self.name.is_empty() || self.name.chars().any(bad) {
            return Err(Error::BadName(self.name.clone()));
        }
        Ok(format!(
            "CN=Microsoft_{}_{}",
            self.name,
            self.version_string()
        ))
    }

    /// Path of the image folder below the volume root, Windows separators.
    pub fn store_path(&self) -> Result<String, Error> {
        Ok(format!("{STORE_DIR}\\{}", self.store_name()?))
    }

    /// `version.wcx`: two CRLF-terminated lines, no BOM. The OEM code page agrees with
    /// ASCII for the characters allowed here, so non-ASCII edition ids are refused.
    pub fn version_wcx(&self) -> Result<Vec<u8>, Error> {
        if !self
            .edition_id
            .chars()
            .all(|c| c.is_ascii_graphic() || c == ' ')
        {
            return Err(Error::BadEdition(self.edition_id.clone()));
        }
        Ok(format!(
            "BuildNumber={}\r\nProductName={}\r\n",
            self.version.2, self.edition_id
        )
        .into_bytes())
    }

    /// `metadata.json`: one object with exactly Name, Version, Path, Size, CreatedTime,
    /// UTF-8 without BOM, trailing CRLF.
    pub fn metadata_json(&self) -> Result<Vec<u8>, Error> {
        let path = format!("C:\\{}", self.store_path()?);
        let obj = serde_json::json!({
            "Name": self.name,
            "Version": self.version_string(),
            "Path": path,
            "Size": self.total_bytes,
            "CreatedTime": round_trip_time(self.creation_time),
        });
        // serde_json keeps insertion order only with preserve_order; write the keys in the
        // documented order by hand so the bytes are fixed.
        let fields = ["Name", "Version", "Path", "Size", "CreatedTime"];
        let body: Vec<String> = fields
            .iter()
            .map(|k| format!("{}:{}", serde_json::Value::from(*k), obj[*k]))
            .collect();
        Ok(format!("{{{}}}\r\n", body.join(",")).into_bytes())
    }
}

/// A FILETIME as .NET's round-trip ("o") UTC form: `2016-09-26T12:34:56.1234567Z`.
pub fn round_trip_time(filetime: u64) -> String {
    let secs = (filetime / 10_000_000) as i64 - FILETIME_UNIX_DIFF_SECS;
    let frac = filetime % 10_000_000;
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{frac:07}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::time::unix_to_filetime;

    fn facts() -> BaseImageFacts {
        BaseImageFacts {
            name: "NanoServer".into(),
            version: (10, 0, 10586, 8),
            edition_id: "ServerDatacenterNano".into(),
            total_bytes: 650_000_123,
            creation_time: unix_to_filetime(1_474_848_000) + 1_234_567,
        }
    }

    #[test]
    fn names_and_files() {
        let f = facts();
        assert_eq!(
            f.store_name().unwrap(),
            "CN=Microsoft_NanoServer_10.0.10586.8"
        );
        assert_eq!(
            f.version_wcx().unwrap(),
            b"BuildNumber=10586\r\nProductName=ServerDatacenterNano\r\n"
        );
        let j = String::from_utf8(f.metadata_json().unwrap()).unwrap();
        assert!(j.ends_with("}\r\n"));
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        let o = v.as_object().unwrap();
        assert_eq!(o.len(), 5);
        assert_eq!(
            o["Path"],
            "C:\\ProgramData\\Microsoft\\Windows\\Images\\CN=Microsoft_NanoServer_10.0.10586.8"
        );
        assert_eq!(o["Size"], 650_000_123u64);
        assert_eq!(o["CreatedTime"], "2016-09-26T00:00:00.1234567Z");
        assert!(j.starts_with("{\"Name\":\"NanoServer\",\"Version\":\"10.0.10586.8\",\"Path\":"));
    }

    #[test]
    fn bad_names_are_refused() {
        let mut f = facts();
        f.name = "a\\b".into();
        assert!(f.store_name().is_err());
        let mut f = facts();
        f.edition_id = "Ünicode".into();
        assert!(f.version_wcx().is_err());
    }
}
