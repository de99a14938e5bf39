//! WinSxS keyform names (`<arch>_<name>_<pkt>_<version>_<culture>_<pseudokey>`) and the
//! identity pseudokey hash.
//!
//! Source: facts-cbs.md section 4 (component keyform shape, truncation limits confirmed by
//! real file names, and the four-lane string hash folded over identity attributes in a fixed
//! order). Identities are ASCII in practice; non-ASCII input is rejected.

/// Multiplier that folds identity attributes (K in facts-cbs.md 4.2).
const K: u64 = 0x1_FFFF_FFF7;
/// Longest component name shown whole; longer names keep 19 + `..` + 19 characters.
const NAME_LIMIT: usize = 40;
/// Longest culture shown whole; longer cultures keep 3 + `..` + 3 characters.
const CULTURE_LIMIT: usize = 8;

/// Errors computing a keyform.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An identity attribute holds a non-ASCII character, which the hash does not define.
    #[error("assembly identity attribute {attr} = {value:?} holds non-ASCII characters; the WinSxS keyform hash is defined for ASCII only, fix the manifest")]
    NonAscii { attr: &'static str, value: String },
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// The attributes of an `<assemblyIdentity>` that take part in the keyform.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssemblyIdentity {
    pub name: String,
    pub version: String,
    pub processor_architecture: String,
    /// The `language` attribute (`neutral`, `*`, empty or a culture such as `en-US`).
    pub language: String,
    pub public_key_token: String,
    /// `type` (e.g. `win32`, `dualModeDriver`); empty when absent.
    pub type_: String,
    /// `versionScope` (e.g. `nonSxS`); empty when absent.
    pub version_scope: String,
}

/// The four-lane string hash `H(s)` of facts-cbs.md 4.2 (ASCII upper case folded to lower).
pub fn string_hash(s: &str) -> u64 {
    let mut lanes = [0u32; 4];
    for (i, unit) in s.encode_utf16().enumerate() {
        let c = if (0x41..=0x5A).contains(&unit) {
            unit + 0x20
        } else {
            unit
        };
        let lane = &mut lanes[i % 4];
        *lane = lane.wrapping_mul(0x1003F).wrapping_add(u32::from(c));
    }
    u64::from(lanes[0])
        .wrapping_mul(0x1E5_FFFF_FD27)
        .wrapping_add(u64::from(lanes[1]).wrapping_mul(0xFFFF_FFDC_0000_0051))
        .wrapping_add(u64::from(lanes[2]).wrapping_mul(0x1_FFFF_FFF7))
        .wrapping_add(u64::from(lanes[3]))
}

fn culture_is_neutral(lang: &str) -> bool {
    lang.is_empty()
        || lang.eq_ignore_ascii_case("neutral")
        || lang.eq_ignore_ascii_case("none")
        || lang == "*"
}

fn check_ascii(id: &AssemblyIdentity) -> Result<(), Error> {
    let fields: [(&'static str, &str); 7] = [
        ("name", &id.name),
        ("version", &id.version),
        ("processorArchitecture", &id.processor_architecture),
        ("language", &id.language),
        ("publicKeyToken", &id.public_key_token),
        ("type", &id.type_),
        ("versionScope", &id.version_scope),
    ];
    for (attr, value) in fields {
        if !value.is_ascii() {
            return Err(Error::NonAscii {
                attr,
                value: value.to_string(),
            });
        }
    }
    Ok(())
}

/// The 64-bit pseudokey of an identity; `with_version = false` gives the versionless
/// ("Winners") variant.
pub fn identity_hash(id: &AssemblyIdentity, with_version: bool) -> Result<u64, Error> {
    check_ascii(id)?;
    let culture = if culture_is_neutral(&id.language) {
        ""
    } else {
        id.language.as_str()
    };
    let version = if with_version {
        id.version.as_str()
    } else {
        ""
    };
    let attrs = [
        ("name", id.name.as_str()),
        ("culture", culture),
        ("type", id.type_.as_str()),
        ("version", version),
        ("publicKeyToken", id.public_key_token.as_str()),
        ("processorArchitecture", id.processor_architecture.as_str()),
        ("versionScope", id.version_scope.as_str()),
    ];
    let mut acc: u64 = 0;
    for (attr, value) in attrs {
        if value.is_empty() {
            continue;
        }
        let pair = string_hash(attr)
            .wrapping_mul(K)
            .wrapping_add(string_hash(value));
        acc = acc.wrapping_mul(K).wrapping_add(pair);
    }
    Ok(acc)
}

fn display_name(name: &str) -> String {
    let kept: Vec<char> = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect();
    if kept.len() > NAME_LIMIT {
        let head: String = kept[..19].iter().collect();
        let tail: String = kept[kept.len() - 19..].iter().collect();
        format!("{head}..{tail}")
    } else {
        kept.into_iter().collect()
    }
}

fn display_culture(lang: &str) -> String {
    if culture_is_neutral(lang) {
        return "none".to_string();
    }
    let chars: Vec<char> = lang.chars().collect();
    if chars.len() > CULTURE_LIMIT {
        let head: String = chars[..3].iter().collect();
        let tail: String = chars[chars.len() - 3..].iter().collect();
        format!("{head}..{tail}")
    } else {
        lang.to_string()
    }
}

fn arch_or_none(arch: &str) -> &str {
    if arch.is_empty() {
        "none"
    } else {
        arch
    }
}

/// The WinSxS folder name of a component (add `.manifest` for its file in `WinSxS\Manifests`).
pub fn keyform(id: &AssemblyIdentity) -> Result<String, Error> {
    let hash = identity_hash(id, true)?;
    Ok(format!(
        "{}_{}_{}_{}_{}_{:016x}",
        arch_or_none(&id.processor_architecture),
        display_name(&id.name),
        id.public_key_token,
        id.version,
        display_culture(&id.language),
        hash
    )
    .to_ascii_lowercase())
}

/// The versionless keyform used under `SideBySide\Winners`.
pub fn winners_keyform(id: &AssemblyIdentity) -> Result<String, Error> {
    let hash = identity_hash(id, false)?;
    Ok(format!(
        "{}_{}_{}_{}_{:016x}",
        arch_or_none(&id.processor_architecture),
        display_name(&id.name),
        id.public_key_token,
        display_culture(&id.language),
        hash
    )
    .to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WIN: &str = "31bf3856ad364e35";

    fn id(
        name: &str,
        arch: &str,
        ver: &str,
        lang: &str,
        ty: &str,
        scope: &str,
    ) -> AssemblyIdentity {
        AssemblyIdentity {
            name: name.into(),
            version: ver.into(),
            processor_architecture: arch.into(),
            language: lang.into(),
            public_key_token: WIN.into(),
            type_: ty.into(),
            version_scope: scope.into(),
        }
    }

    fn hash_hex(i: &AssemblyIdentity) -> String {
        format!("{:016x}", identity_hash(i, true).unwrap())
    }

    #[test]
    fn empty_string_hashes_to_zero() {
        assert_eq!(string_hash(""), 0);
    }

    #[test]
    fn full_keyform_vectors() {
        let cases = [
            (id("Microsoft-Windows-ServicingStack", "amd64", "10.0.14393.693", "neutral", "", "nonSxS"),
             "amd64_microsoft-windows-servicingstack_31bf3856ad364e35_10.0.14393.693_none_42ff55c9655f38bf"),
            (id("Microsoft-Windows-Advapi32", "x86", "10.0.14393.0", "neutral", "", "nonSxS"),
             "x86_microsoft-windows-advapi32_31bf3856ad364e35_10.0.14393.0_none_b49e21a1e4d6ebe1"),
            (id("Microsoft.PowerShell.DSC.Proxy.Resources", "amd64", "7.3.7601.16384", "sr-Latn-RS", "", "nonSxS"),
             "amd64_microsoft.powershell.dsc.proxy.resources_31bf3856ad364e35_7.3.7601.16384_sr-..-rs_8a2f6ac5652a8762"),
            (id("Microsoft-Windows-Shell-InboxGames-Hearts.Resources", "x86", "6.0.6000.16386", "en-US", "", "nonSxS"),
             "x86_microsoft-windows-s..es-hearts.resources_31bf3856ad364e35_6.0.6000.16386_en-us_8adcf7faf63cfb99"),
            (id("Microsoft-Windows-Messaging-MessagingService", "amd64", "10.0.22621.1", "neutral", "", "nonSxS"),
             "amd64_microsoft-windows-m..ng-messagingservice_31bf3856ad364e35_10.0.22621.1_none_4869362ace564f95"),
            (id("dual_sdbus.inf", "amd64", "10.0.22621.1", "neutral", "dualModeDriver", "nonSxS"),
             "amd64_dual_sdbus.inf_31bf3856ad364e35_10.0.22621.1_none_31441826756cc490"),
            (id("dual_stornvme.inf", "amd64", "10.0.22621.1", "neutral", "dualModeDriver", "nonSxS"),
             "amd64_dual_stornvme.inf_31bf3856ad364e35_10.0.22621.1_none_f76234b2364e1221"),
        ];
        for (i, want) in cases {
            assert_eq!(keyform(&i).unwrap(), want);
        }
    }

    #[test]
    fn hash_only_vectors() {
        let cases = [
            (
                id(
                    "Microsoft-Windows-Shell-Sounds",
                    "amd64",
                    "10.0.14393.0",
                    "neutral",
                    "",
                    "nonSxS",
                ),
                "4486e7adcc3c3b8e",
            ),
            (
                id(
                    "Microsoft-Windows-Font-TrueType-Arial",
                    "amd64",
                    "10.0.14393.0",
                    "neutral",
                    "",
                    "nonSxS",
                ),
                "9ff7dbaac40db853",
            ),
            (
                id(
                    "Microsoft-Windows-MCCS-SyncUtil",
                    "wow64",
                    "10.0.14393.0",
                    "neutral",
                    "",
                    "nonSxS",
                ),
                "fe5045edee3ebb3e",
            ),
            (
                id(
                    "Microsoft-Windows-ServicingStack",
                    "amd64",
                    "10.0.19041.1",
                    "neutral",
                    "",
                    "nonSxS",
                ),
                "bf506ecc66a800df",
            ),
        ];
        for (i, want) in cases {
            assert_eq!(hash_hex(&i), want, "{}", i.name);
        }
    }

    #[test]
    fn common_controls_and_winners() {
        let mut cc = id(
            "Microsoft.Windows.Common-Controls",
            "amd64",
            "6.0.19041.1110",
            "none",
            "win32",
            "",
        );
        cc.public_key_token = "6595b64144ccf1df".into();
        assert_eq!(
            keyform(&cc).unwrap(),
            "amd64_microsoft.windows.common-controls_6595b64144ccf1df_6.0.19041.1110_none_60b5254171f9507e"
        );
        assert!(winners_keyform(&cc)
            .unwrap()
            .ends_with("_6595b64144ccf1df_none_62fe57338acfab7a"));
        let ss = id(
            "Microsoft-Windows-ServicingStack",
            "amd64",
            "10.0.19041.1",
            "neutral",
            "",
            "nonSxS",
        );
        assert_eq!(
            winners_keyform(&ss).unwrap(),
            "amd64_microsoft-windows-servicingstack_31bf3856ad364e35_none_4a207b402ad93a1c"
        );
    }

    #[test]
    fn dropped_attributes_change_the_hash() {
        let no_scope = id(
            "Microsoft-Windows-ServicingStack",
            "amd64",
            "10.0.14393.693",
            "neutral",
            "",
            "",
        );
        assert_eq!(hash_hex(&no_scope), "c9c216927930b7ca");
        let no_type = id(
            "dual_sdbus.inf",
            "amd64",
            "10.0.22621.1",
            "neutral",
            "",
            "nonSxS",
        );
        assert_eq!(hash_hex(&no_type), "4e668a106d410437");
    }

    #[test]
    fn non_ascii_is_rejected() {
        let bad = id("Micrösoft", "amd64", "1.0.0.0", "neutral", "", "");
        let e = keyform(&bad).unwrap_err().to_string();
        assert!(e.contains("name"), "{e}");
    }
}
