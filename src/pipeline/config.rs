//! The settings of `nanoforge build`: one table declares every setting's template key,
//! command-line flag, default and help. Templates (TOML, flat keys) and flags are the same
//! settings; flags override the template, the template overrides the default.
//!
//! The feature set follows Microsoft's `New-NanoServerImage` (NanoServerImageGenerator module,
//! Windows Server 2016): MediaPath, Edition, DeploymentType, the package switches, ServicingPackagePath,
//! Language, MaxSize, ComputerName, AdministratorPassword, UnattendPath, DomainBlobPath,
//! DriverPath, InterfaceNameOrIndex + Ipv4/Ipv6 settings, EnableRemoteManagementPort, CopyPath,
//! SetupCompleteCommand, EnableEMS/EMSPort/EMSBaudRate, DebugMethod and its parameters,
//! Development.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How a setting's value is written and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Free text.
    Text,
    /// A host path; relative paths in a template are relative to the template's folder.
    Path,
    /// A switch: `--flag` on the command line, `true`/`false` in a template.
    Bool,
    /// A byte size like `8GiB`.
    Size,
    /// A whole number.
    Int,
    /// Repeatable text (`--flag A --flag B`, `key = ["A", "B"]`).
    List,
    /// Repeatable host paths.
    PathList,
    /// One of a fixed set of words (case-insensitive).
    Choice(&'static [&'static str]),
}

/// One setting: template key, flag (the key with `-` for `_`), default and help.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub key: &'static str,
    pub kind: Kind,
    pub default: Option<&'static str>,
    /// Heading the setting is listed under in `--help`.
    pub group: &'static str,
    pub help: &'static str,
}

impl Setting {
    /// The command-line flag, without the leading dashes.
    pub fn flag(&self) -> String {
        self.key.replace('_', "-")
    }
}

const fn s(
    key: &'static str,
    kind: Kind,
    default: Option<&'static str>,
    group: &'static str,
    help: &'static str,
) -> Setting {
    Setting {
        key,
        kind,
        default,
        group,
        help,
    }
}

const MEDIA: &str = "Media and image";
const PKG: &str = "Packages";
const DISK: &str = "Disk";
const HOST: &str = "Host settings";
const NET: &str = "Network";
const BOOT: &str = "Boot and debugging";
const STORE: &str = "Containers";
const REPRO: &str = "Reproducibility";

/// Every setting of a build. The README and `--help` are generated from this table.
pub static SETTINGS: &[Setting] = &[
    s("media", Kind::Path, None, MEDIA,
      "Installation media root (holding NanoServer\\NanoServer.wim), or `demo` for the built-in demo media"),
    s("edition", Kind::Text, Some("Datacenter"), MEDIA,
      "Standard, Datacenter, or an image index or name of NanoServer.wim"),
    s("deployment_type", Kind::Choice(&["guest", "host"]), Some("guest"), MEDIA,
      "guest adds the Guest package (virtual machines), host the Host package (physical machines)"),
    s("language", Kind::Text, None, MEDIA,
      "Language of the language packs (e.g. en-us); detected when the media has one language folder"),
    s("release", Kind::Choice(&["auto", "TP3", "TP4", "TP5", "RTM"]), Some("auto"), MEDIA,
      "Media release; auto reads it from the image's build number"),
    s("locked", Kind::Path, None, MEDIA,
      "A `nanoforge media lock` file: refuse any media file whose SHA-256 differs"),
    s("compute", Kind::Bool, Some("false"), PKG, "Add the Compute package (Hyper-V role)"),
    s("containers", Kind::Bool, Some("false"), PKG, "Add the Containers package"),
    s("oem_drivers", Kind::Bool, Some("false"), PKG, "Add the OEM-Drivers package (basic physical drivers)"),
    s("storage", Kind::Bool, Some("false"), PKG, "Add the Storage package (file server roles)"),
    s("clustering", Kind::Bool, Some("false"), PKG, "Add the FailoverCluster package"),
    s("defender", Kind::Bool, Some("false"), PKG, "Add the Defender package"),
    s("package", Kind::List, None, PKG,
      "Add a package by short name (repeatable; `nanoforge packages list` shows them)"),
    s("servicing_package", Kind::PathList, None, PKG,
      "Update cab applied after the packages, in the order given (repeatable)"),
    s("allow_partial_servicing", Kind::Bool, Some("false"), PKG,
      "Build even when a package has elements that could not be applied offline"),
    s("first_boot_servicing", Kind::Bool, Some("false"), PKG,
      "Stage packages with unapplied elements and install them with DISM at first boot"),
    s("driver", Kind::PathList, None, PKG,
      "Driver folder (searched recursively for .inf) or .inf file to inject (repeatable)"),
    s("size", Kind::Size, Some("4GiB"), DISK, "Virtual disk size"),
    s("sector_size", Kind::Choice(&["512", "4096"]), Some("512"), DISK, "Logical sector size in bytes"),
    s("cluster_size", Kind::Size, Some("4096"), DISK, "NTFS cluster size of the Windows partition"),
    s("fixed", Kind::Bool, Some("false"), DISK, "Allocate the whole VHDX/VHD up front"),
    s("computer_name", Kind::Text, None, HOST, "Computer name (1-15 letters, digits, hyphens)"),
    s("admin_password_file", Kind::Path, None, HOST,
      "Read the Administrator password from this file (first line)"),
    s("admin_password_env", Kind::Text, None, HOST,
      "Read the Administrator password from this environment variable"),
    s("admin_password_prompt", Kind::Bool, Some("false"), HOST,
      "Ask for the Administrator password on the terminal (no echo)"),
    s("time_zone", Kind::Text, None, HOST, "Windows time zone id, e.g. \"Pacific Standard Time\""),
    s("registered_owner", Kind::Text, None, HOST, "Registered owner"),
    s("registered_organization", Kind::Text, None, HOST, "Registered organisation"),
    s("unattend", Kind::Path, None, HOST, "Answer file copied verbatim instead of the generated one"),
    s("domain_blob", Kind::Path, None, HOST, "Offline domain join blob (from `djoin /provision`)"),
    s("copy_path", Kind::List, None, HOST,
      "Copy a host file or folder into the image: SRC=DEST (DEST inside the Windows volume; repeatable)"),
    s("setup_complete_command", Kind::List, None, HOST, "Command run once at first boot (repeatable, in order)"),
    s("development", Kind::Bool, Some("false"), HOST, "Development mode: unsigned apps and test signing"),
    s("interface", Kind::Text, None, NET, "Interface for static addressing, e.g. Ethernet"),
    s("ipv4_address", Kind::Text, None, NET, "Static IPv4 address"),
    s("ipv4_subnet_mask", Kind::Text, None, NET, "IPv4 subnet mask, e.g. 255.255.255.0"),
    s("ipv4_gateway", Kind::Text, None, NET, "IPv4 default gateway"),
    s("ipv4_dns", Kind::List, None, NET, "IPv4 DNS server (repeatable)"),
    s("ipv6_address", Kind::Text, None, NET, "Static IPv6 address, optionally with /prefix"),
    s("ipv6_dns", Kind::List, None, NET, "IPv6 DNS server (repeatable)"),
    s("enable_remote_management_port", Kind::Bool, Some("false"), NET,
      "Open TCP 5985 (WinRM over HTTP) in the firewall at first boot"),
    s("ems", Kind::Bool, Some("false"), BOOT, "Emergency Management Services on a serial port"),
    s("ems_port", Kind::Int, Some("1"), BOOT, "EMS serial port number"),
    s("ems_baud_rate", Kind::Int, Some("115200"), BOOT, "EMS baud rate"),
    s("debug_method", Kind::Choice(&["none", "serial", "net", "1394", "usb"]), Some("none"), BOOT,
      "Kernel debugger transport"),
    s("debug_port", Kind::Int, None, BOOT, "Serial debug port number, or the net debugger's UDP port"),
    s("debug_baud_rate", Kind::Int, Some("115200"), BOOT, "Serial debugger baud rate"),
    s("debug_remote_ip", Kind::Text, None, BOOT, "Net debugger host address"),
    s("debug_key_file", Kind::Path, None, BOOT, "File holding the net debugger key (w.x.y.z)"),
    s("debug_channel", Kind::Int, None, BOOT, "1394 debugger channel"),
    s("debug_target_name", Kind::Text, None, BOOT, "USB debugger target name"),
    s("base_image", Kind::PathList, None, STORE,
      "Container base OS WIM (FILE or FILE:INDEX; repeatable); `media:PATH` is relative to the media root"),
    s("first_boot_container_setup", Kind::Bool, Some("false"), STORE,
      "Script the steps only Windows can do for the image store into first boot"),
    s("docker_image", Kind::PathList, None, STORE,
      "A `docker save` tarball staged in the image and loaded at first boot (repeatable)"),
    s("seed", Kind::Text, None, REPRO,
      "Seed of every GUID and serial (default: derived from the settings and inputs)"),
];

/// A setting's value after merging.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum Value {
    Text(String),
    Bool(bool),
    Int(u64),
    List(Vec<String>),
}

/// Where a value came from (shown by `--dry-run`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Default,
    Template,
    Flag,
}

/// Merged settings: key → (value, origin). Keys absent have no value and no default.
#[derive(Debug, Clone, Default)]
pub struct Config {
    values: BTreeMap<&'static str, (Value, Origin)>,
}

/// A problem with a template or flag value; the message names the key and the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{file}: {msg}")]
    Template { file: String, msg: String },
    #[error("--{flag}: {msg}")]
    Flag { flag: String, msg: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Largest template read (real ones are a few KiB).
const MAX_TEMPLATE: u64 = 1 << 20;

fn setting(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// Parse a text value of `kind` (flag values, defaults, template strings).
fn parse_text(kind: Kind, text: &str, base: Option<&Path>) -> std::result::Result<Value, String> {
    Ok(match kind {
        Kind::Text => Value::Text(text.to_string()),
        Kind::Path => Value::Text(resolve_path(text, base)),
        Kind::Bool => match text.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "on" => Value::Bool(true),
            "false" | "no" | "0" | "off" => Value::Bool(false),
            _ => return Err(format!("{text:?} is not true or false")),
        },
        Kind::Size => Value::Int(crate::core::units::parse_size(text).map_err(|e| e.to_string())?),
        Kind::Int => Value::Int(
            text.parse()
                .map_err(|_| format!("{text:?} is not a whole number"))?,
        ),
        Kind::List => Value::List(vec![text.to_string()]),
        Kind::PathList => Value::List(vec![resolve_path(text, base)]),
        Kind::Choice(words) => match words.iter().find(|w| w.eq_ignore_ascii_case(text)) {
            Some(w) => Value::Text(w.to_string()),
            None => return Err(format!("{text:?} is not one of {}", words.join(", "))),
        },
    })
}

/// Make a template's relative path relative to the template's folder. `demo`, `media:...`
/// and absolute paths are kept.
fn resolve_path(text: &str, base: Option<&Path>) -> String {
    let keep = text == "demo" || text.starts_with("media:") || Path::new(text).is_absolute();
    match base {
        Some(b) if !keep => b.join(text).to_string_lossy().into_owned(),
        _ => text.to_string(),
    }
}

impl Config {
    /// Defaults only.
    pub fn defaults() -> Config {
        let mut c = Config::default();
        for st in SETTINGS {
            if let Some(d) = st.default {
                let v = parse_text(st.kind, d, None).expect("table defaults parse");
                c.values.insert(st.key, (v, Origin::Default));
            }
        }
        c
    }

    /// Read a template over the defaults. Unknown keys and wrongly typed values are errors.
    pub fn apply_template(&mut self, path: &Path) -> Result<()> {
        let file = path.display().to_string();
        let err = |msg: String| Error::Template {
            file: file.clone(),
            msg,
        };
        let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read: {e}")))?;
        if meta.len() > MAX_TEMPLATE {
            return Err(err(format!(
                "{} bytes, above the {MAX_TEMPLATE}-byte limit of a template",
                meta.len()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            err(format!("not valid TOML: {}", one_line(&e.to_string())))
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        for (key, value) in &table {
            let st = setting(key).ok_or_else(|| {
                err(format!(
                    "unknown key {key:?}; `nanoforge build --help` lists every setting"
                ))
            })?;
            let v = from_toml(st, value, &base).map_err(|m| err(format!("key {key}: {m}")))?;
            self.values.insert(st.key, (v, Origin::Template));
        }
        Ok(())
    }

    /// Override with a flag's values (all occurrences of one flag).
    pub fn apply_flag(&mut self, key: &str, texts: &[String]) -> Result<()> {
        let st = setting(key).expect("flags are generated from the table");
        let err = |msg: String| Error::Flag {
            flag: st.flag(),
            msg,
        };
        let v = match st.kind {
            Kind::List | Kind::PathList => Value::List(texts.to_vec()),
            _ => {
                let t = texts.last().map(String::as_str).unwrap_or("true");
                parse_text(st.kind, t, None).map_err(err)?
            }
        };
        self.values.insert(st.key, (v, Origin::Flag));
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        debug_assert!(setting(key).is_some(), "unknown setting {key}");
        self.values.get(key).map(|(v, _)| v)
    }

    pub fn text(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Value::Text(t)) => Some(t),
            _ => None,
        }
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some(Value::Bool(true)))
    }

    pub fn int(&self, key: &str) -> Option<u64> {
        match self.get(key) {
            Some(Value::Int(i)) => Some(*i),
            _ => None,
        }
    }

    pub fn list(&self, key: &str) -> &[String] {
        match self.get(key) {
            Some(Value::List(l)) => l,
            _ => &[],
        }
    }

    /// Every set value with its origin, in table order (for the plan).
    pub fn entries(&self) -> Vec<(&'static str, &Value, Origin)> {
        SETTINGS
            .iter()
            .filter_map(|st| self.values.get(st.key).map(|(v, o)| (st.key, v, *o)))
            .collect()
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn from_toml(st: &Setting, v: &toml::Value, base: &Path) -> std::result::Result<Value, String> {
    use toml::Value as T;
    match (st.kind, v) {
        (Kind::Bool, T::Boolean(b)) => Ok(Value::Bool(*b)),
        (Kind::Int | Kind::Size, T::Integer(i)) => u64::try_from(*i)
            .map(Value::Int)
            .map_err(|_| format!("{i} is negative")),
        (Kind::Choice(_), T::Integer(i)) => parse_text(st.kind, &i.to_string(), None),
        (Kind::List | Kind::PathList, T::Array(items)) => {
            let mut out = Vec::new();
            for it in items {
                match it {
                    T::String(t) if st.kind == Kind::PathList => {
                        out.push(resolve_path(t, Some(base)))
                    }
                    T::String(t) => out.push(t.clone()),
                    other => return Err(format!("list items must be strings, found {other}")),
                }
            }
            Ok(Value::List(out))
        }
        (_, T::String(t)) => parse_text(st.kind, t, Some(base)),
        (kind, other) => Err(format!("expected {}, found {other}", kind_word(kind))),
    }
}

/// How the help and errors name a kind.
pub fn kind_word(kind: Kind) -> &'static str {
    match kind {
        Kind::Text => "text",
        Kind::Path => "a path",
        Kind::Bool => "true or false",
        Kind::Size => "a size like \"8GiB\"",
        Kind::Int => "a number",
        Kind::List => "a list of strings",
        Kind::PathList => "a list of paths",
        Kind::Choice(_) => "one of the listed words",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_keys_are_unique_and_defaults_parse() {
        let mut keys: Vec<_> = SETTINGS.iter().map(|s| s.key).collect();
        keys.sort();
        let n = keys.len();
        keys.dedup();
        assert_eq!(keys.len(), n, "duplicate key in SETTINGS");
        let c = Config::defaults();
        assert_eq!(c.text("edition"), Some("Datacenter"));
        assert_eq!(c.int("size"), Some(4 << 30));
        assert!(!c.flag("containers"));
    }

    #[test]
    fn flags_override_templates_and_paths_are_template_relative() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("t.toml");
        std::fs::write(
            &t,
            "media = \"demo\"\nsize = \"2GiB\"\ncontainers = true\ndriver = [\"drv\"]\ncomputer_name = \"a\"\n",
        )
        .unwrap();
        let mut c = Config::defaults();
        c.apply_template(&t).unwrap();
        assert_eq!(c.text("media"), Some("demo"));
        assert_eq!(c.int("size"), Some(2 << 30));
        assert!(c.flag("containers"));
        assert_eq!(c.list("driver"), [dir.path().join("drv").to_string_lossy()]);
        c.apply_flag("computer_name", &["b".into()]).unwrap();
        assert_eq!(c.text("computer_name"), Some("b"));
        let origins: Vec<_> = c
            .entries()
            .into_iter()
            .filter(|e| e.0 == "computer_name")
            .collect();
        assert_eq!(origins[0].2, Origin::Flag);
    }

    #[test]
    fn bad_templates_name_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("t.toml");
        for (body, want) in [
            ("sise = 1\n", "unknown key \"sise\""),
            ("size = true\n", "key size: expected a size"),
            ("deployment_type = \"cloud\"\n", "not one of guest, host"),
            ("size = \n", "not valid TOML"),
        ] {
            std::fs::write(&t, body).unwrap();
            let e = Config::defaults()
                .apply_template(&t)
                .unwrap_err()
                .to_string();
            assert!(e.contains("t.toml") && e.contains(want), "{body:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
