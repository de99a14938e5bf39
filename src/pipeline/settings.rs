//! Offline host settings, the ones `New-NanoServerImage` offered: computer name, administrator
//! password, time zone, registered owner and organisation, offline domain join, static
//! IPv4/IPv6/DNS, the WinRM firewall rule, first-boot commands and the development switches.
//!
//! Sources: Microsoft "Unattended Windows Setup Reference" (components
//! Microsoft-Windows-Shell-Setup: ComputerName, RegisteredOwner, RegisteredOrganization,
//! TimeZone, UserAccounts/AdministratorPassword; Microsoft-Windows-UnattendedJoin:
//! Identification/Provisioning/AccountData, valid in the specialize pass), "Add a custom
//! script to Windows Setup" (SetupComplete.cmd), the `netsh interface` and
//! `netsh advfirewall` command references, RFC 1001 §14 and "Naming conventions in Active
//! Directory" (NetBIOS computer names), and docs/domain.md §5.
//!
//! What goes where:
//! - SYSTEM hive: `<current control set>\Control\ComputerName\{ComputerName,ActiveComputerName}`
//!   `!ComputerName` and `<current control set>\Services\Tcpip\Parameters!{Hostname,NV Hostname}`.
//!   The current control set is `ControlSet%03u` of `Select!Current`, else ControlSet001.
//! - SOFTWARE hive (development only): `Microsoft\Windows\CurrentVersion\AppModelUnlock`
//!   `!AllowAllTrustedApps` and `!AllowDevelopmentWithoutDevLicense` = 1.
//! - `Windows\Panther\Unattend.xml` rendered from `templates/files/unattend.xml`, or the
//!   user's own unattend file copied verbatim.
//! - `Windows\Setup\Scripts\SetupComplete.cmd` rendered from
//!   `templates/files/SetupComplete.cmd`: ASCII, CRLF line endings. The script calls itself
//!   again with stdout and stderr appended to the log, so every step (all parts of a user's
//!   compound command too) is logged; each step is one command line.
//!
//! The offline domain join blob goes to the specialize pass
//! (`Identification/Provisioning/AccountData`), not to `OfflineIdentification`: that element
//! is only read in the offlineServicing pass, which Windows does not run from
//! `Windows\Panther\Unattend.xml` at first boot.
//!
//! Secrets (the administrator password, the domain join blob) are [`Secret`]s: they print as
//! `<redacted>`, are never serialised, never appear in the report or in an error message, and
//! are loaded from a file, an environment variable or a no-echo prompt, never from a plain
//! command-line value.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::formats::regf::{self, Hive, Value};
use crate::tree::{self, Content, Meta, NodeId, Tree};

/// The unattend template, rendered with XML escaping of every inserted value.
const UNATTEND_TEMPLATE: &str = include_str!("../../templates/files/unattend.xml");
/// The first-boot script template; values are validated (ASCII, no line breaks) before use.
const SETUP_COMPLETE_TEMPLATE: &str = include_str!("../../templates/files/SetupComplete.cmd");

/// Where the unattend answer file goes: Windows looks for it there at first boot.
pub const UNATTEND_PATH: &str = "Windows\\Panther\\Unattend.xml";
/// Where the first-boot script goes (run once by Windows Setup after specialize/oobe).
pub const SETUP_COMPLETE_PATH: &str = "Windows\\Setup\\Scripts\\SetupComplete.cmd";
/// The log the first-boot script writes (as Windows expands it at run time).
pub const SETUP_COMPLETE_LOG: &str = "%SystemRoot%\\Setup\\Scripts\\SetupComplete.log";
/// SOFTWARE key holding the development-mode switches.
pub const APP_MODEL_UNLOCK_KEY: &str = "Microsoft\\Windows\\CurrentVersion\\AppModelUnlock";

/// NetBIOS names are 16 bytes, the last one the service type: 15 characters are left
/// (RFC 1001 §14; Windows refuses longer computer names).
pub const MAX_COMPUTER_NAME: usize = 15;
/// Longest password accepted: the limit of the Windows account APIs (NetUserAdd), 256
/// characters; the UI stops at 127.
pub const MAX_PASSWORD_CHARS: usize = 256;
/// Largest secret file read (an offline domain join blob is a few KiB of base64 text; this
/// leaves room for certificates and policies in newer provisioning packages).
pub const MAX_SECRET_FILE: u64 = 1 << 20;
/// Largest user unattend file copied verbatim (real answer files are a few KiB).
pub const MAX_UNATTEND_FILE: u64 = 4 << 20;
/// Longest free-text value (owner, organisation, time zone, interface name): far above any
/// real one, low enough to catch a file pasted by mistake.
pub const MAX_TEXT_CHARS: usize = 256;
/// Longest first-boot command line: cmd.exe's command line limit is 8191 characters.
pub const MAX_COMMAND_CHARS: usize = 8191;
/// The WinRM HTTP listener port opened by "enable remote management".
pub const WINRM_HTTP_PORT: u16 = 5985;

/// FILE_ATTRIBUTE_ARCHIVE, which Windows sets on every new file.
const ATTR_ARCHIVE: u32 = 0x20;

/// Everything that can go wrong applying settings. No variant ever holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting has a value Windows would refuse or that would break a generated file.
    #[error("setting {field} = {value:?}: {detail}")]
    Invalid {
        field: &'static str,
        value: String,
        detail: String,
    },
    /// Two settings cannot be used together.
    #[error("settings {0}")]
    Conflict(String),
    /// A secret could not be loaded or is unusable (the message never shows the secret).
    #[error("{what}: {detail}")]
    Secret { what: &'static str, detail: String },
    /// The user's unattend file could not be used.
    #[error("unattend file {path}: {detail}")]
    UnattendFile { path: String, detail: String },
    /// A template did not render (a bug in templates/files, not in the settings).
    #[error("template {name}: {detail}; the template shipped with nanoforge is broken")]
    Template { name: &'static str, detail: String },
    #[error("SYSTEM/SOFTWARE hive edit: {0}")]
    Hive(#[from] regf::Error),
    #[error("volume tree: {0}")]
    Tree(#[from] tree::Error),
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
    }
}

/// Result with this step's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn invalid(field: &'static str, value: &str, detail: impl Into<String>) -> Error {
    Error::Invalid {
        field,
        value: value.to_string(),
        detail: detail.into(),
    }
}

// ---------------------------------------------------------------------------------------
// Secrets

/// A secret string. It prints as `<redacted>`, has no `Serialize`, no `FromStr` and no
/// public constructor from a plain value; its bytes are overwritten when dropped.
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&bytes);
    }
}

impl Secret {
    fn new(what: &'static str, s: String) -> Result<Secret> {
        // Wrap first so the text is wiped even when it is refused.
        let secret = Secret(s);
        if secret.0.is_empty() {
            return Err(Error::Secret {
                what,
                detail: "it is empty; give a non-empty value".into(),
            });
        }
        if secret.0.contains('\0') {
            return Err(Error::Secret {
                what,
                detail: "it contains a NUL character, which Windows cannot store".into(),
            });
        }
        Ok(secret)
    }

    /// The secret text. Call sites that use it must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Read a secret from a file: UTF-8, or UTF-16LE with a byte order mark (what `djoin
    /// /provision /savefile` writes). One trailing line break and trailing NULs are dropped.
    pub fn from_file(what: &'static str, path: &Path) -> Result<Secret> {
        let shown = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|e| Error::Secret {
            what,
            detail: format!("cannot read {shown}: {e}"),
        })?;
        if meta.len() > MAX_SECRET_FILE {
            return Err(Error::Secret {
                what,
                detail: format!(
                    "{shown} is {} bytes, more than the {MAX_SECRET_FILE} accepted; give the \
                     file holding only the secret",
                    meta.len()
                ),
            });
        }
        let bytes = std::fs::read(path).map_err(|e| Error::Secret {
            what,
            detail: format!("cannot read {shown}: {e}"),
        })?;
        let text = decode_secret_bytes(bytes).ok_or_else(|| Error::Secret {
            what,
            detail: format!("{shown} is neither UTF-8 nor UTF-16LE text with a byte order mark"),
        })?;
        Secret::new(what, trim_secret(text))
    }

    /// Read a secret from an environment variable (its value, minus one trailing line break).
    pub fn from_env(what: &'static str, var: &str) -> Result<Secret> {
        match std::env::var(var) {
            Ok(v) => Secret::new(what, trim_secret(v)),
            Err(std::env::VarError::NotPresent) => Err(Error::Secret {
                what,
                detail: format!("environment variable {var} is not set"),
            }),
            Err(std::env::VarError::NotUnicode(_)) => Err(Error::Secret {
                what,
                detail: format!("environment variable {var} is not valid Unicode"),
            }),
        }
    }

    /// Ask on the terminal without echo; with `confirm`, ask twice and require the same text.
    pub fn prompt(what: &'static str, confirm: bool) -> Result<Secret> {
        let ask = |label: String| {
            rpassword::prompt_password(label).map_err(|e| Error::Secret {
                what,
                detail: format!(
                    "cannot read it from the terminal ({e}); give it in a file or an \
                     environment variable instead"
                ),
            })
        };
        let first = Secret::new(what, ask(format!("{what}: "))?)?;
        if confirm {
            let again = Secret(ask(format!("{what} (again): "))?);
            if again.0 != first.0 {
                return Err(Error::Secret {
                    what,
                    detail: "the two entries differ; try again".into(),
                });
            }
        }
        Ok(first)
    }

    /// Load from a [`SecretSource`].
    pub fn load(what: &'static str, source: &SecretSource) -> Result<Secret> {
        match source {
            SecretSource::File(p) => Secret::from_file(what, p),
            SecretSource::Env(v) => Secret::from_env(what, v),
            SecretSource::Prompt => Secret::prompt(what, true),
        }
    }
}

fn decode_secret_bytes(bytes: Vec<u8>) -> Option<String> {
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        if !rest.len().is_multiple_of(2) {
            return None;
        }
        let units: Vec<u16> = rest
            .chunks_exact(2)
            .map(|p| u16::from_le_bytes([p[0], p[1]]))
            .collect();
        return String::from_utf16(&units).ok();
    }
    let bytes = bytes
        .strip_prefix(&[0xEF, 0xBB, 0xBF])
        .map(<[u8]>::to_vec)
        .unwrap_or(bytes);
    String::from_utf8(bytes).ok()
}

fn trim_secret(mut s: String) -> String {
    while s.ends_with('\0') {
        s.pop();
    }
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    s
}

/// Where a secret comes from, as a build template names it:
/// `admin_password = { env = "NANO_ADMIN_PASSWORD" }`, `{ file = "admin.txt" }` or `"prompt"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
    Prompt,
}

/// The loaded secrets (never deserialised: fill them with [`Settings::load_secrets`] or
/// with [`Secret`]'s loaders).
#[derive(Debug, Default)]
pub struct Secrets {
    pub admin_password: Option<Secret>,
    pub domain_join_blob: Option<Secret>,
}

// ---------------------------------------------------------------------------------------
// Settings

/// Static addressing for one network interface, applied by `netsh` at first boot.
/// Addresses are text here and checked by [`apply`], so a bad one gets a clear message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Network {
    /// Interface name as Windows shows it (e.g. "Ethernet").
    pub interface: String,
    pub ipv4_address: Option<String>,
    /// Dotted subnet mask, e.g. 255.255.255.0.
    pub ipv4_mask: Option<String>,
    pub ipv4_gateway: Option<String>,
    pub ipv4_dns: Vec<String>,
    /// An IPv6 address, optionally with a prefix length (`fd00::5/64`).
    pub ipv6_address: Option<String>,
    pub ipv6_dns: Vec<String>,
}

/// The host settings of one image. A build template's `[settings]` table deserialises
/// into it; secrets are named by source only and loaded separately.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub computer_name: Option<String>,
    pub admin_password: Option<SecretSource>,
    /// Windows time zone id, e.g. "Pacific Standard Time".
    pub time_zone: Option<String>,
    pub registered_owner: Option<String>,
    pub registered_organization: Option<String>,
    /// A `djoin /provision` blob file or other source.
    pub domain_join_blob: Option<SecretSource>,
    /// An answer file copied verbatim to Windows\Panther\Unattend.xml instead of ours.
    pub unattend_file: Option<PathBuf>,
    pub network: Option<Network>,
    /// Open TCP 5985 (WinRM over HTTP) in the firewall at first boot.
    pub remote_management: bool,
    /// Commands run in order by SetupComplete.cmd (one line each, ASCII).
    pub setup_commands: Vec<String>,
    /// Development mode: AppModelUnlock values and test signing in the BCD store.
    pub development: bool,
    /// FILETIME stamped on new registry keys and files (from SOURCE_DATE_EPOCH).
    #[serde(skip)]
    pub timestamp: u64,
    /// The loaded secrets.
    #[serde(skip)]
    pub secrets: Secrets,
}

impl Settings {
    /// Load every secret that has a source and is not loaded yet.
    pub fn load_secrets(&mut self) -> Result<()> {
        if let (Some(src), None) = (&self.admin_password, &self.secrets.admin_password) {
            self.secrets.admin_password = Some(Secret::load("administrator password", src)?);
        }
        if let (Some(src), None) = (&self.domain_join_blob, &self.secrets.domain_join_blob) {
            self.secrets.domain_join_blob = Some(Secret::load("domain join blob", src)?);
        }
        Ok(())
    }

    /// Whether the BCD step must turn test signing on.
    pub fn test_signing(&self) -> bool {
        self.development
    }
}

/// What [`apply`] wrote. Values of secrets never appear in it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SettingsReport {
    /// Registry values set, as `HIVE\key!name = shown value`.
    pub registry: Vec<String>,
    /// Files written into the volume, with a short description.
    pub files: Vec<String>,
    /// The BCD step must set `testsigning` on the Windows boot entry.
    pub test_signing: bool,
}

// ---------------------------------------------------------------------------------------
// Validation

/// Check a computer name against the NetBIOS rules Windows applies: 1–15 characters,
/// letters, digits and hyphens, not all digits, no hyphen at either end.
pub fn validate_computer_name(name: &str) -> Result<()> {
    let f = "computer_name";
    let n = name.chars().count();
    if n == 0 || n > MAX_COMPUTER_NAME {
        return Err(invalid(
            f,
            name,
            format!("a computer name has 1 to {MAX_COMPUTER_NAME} characters, this one has {n}"),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Err(invalid(
            f,
            name,
            format!("character {c:?} is not allowed; use letters A-Z, digits and hyphens only"),
        ));
    }
    if name.chars().all(|c| c.is_ascii_digit()) {
        return Err(invalid(
            f,
            name,
            "a computer name cannot be all digits; add a letter",
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(invalid(
            f,
            name,
            "a computer name cannot start or end with a hyphen",
        ));
    }
    Ok(())
}

/// Free text going into the unattend file: printable, bounded.
fn validate_text(field: &'static str, v: &str) -> Result<()> {
    if v.is_empty() {
        return Err(invalid(
            field,
            v,
            "is empty; remove the setting or give a value",
        ));
    }
    if v.chars().count() > MAX_TEXT_CHARS {
        return Err(invalid(
            field,
            &v.chars().take(40).collect::<String>(),
            format!("is longer than {MAX_TEXT_CHARS} characters"),
        ));
    }
    if let Some(c) = v.chars().find(|c| c.is_control()) {
        return Err(invalid(
            field,
            v,
            format!("contains the control character {c:?}; give one line of text"),
        ));
    }
    Ok(())
}

/// Text going into SetupComplete.cmd: ASCII, one line, no NUL.
fn validate_cmd_text(field: &'static str, v: &str, max: usize) -> Result<()> {
    if v.trim().is_empty() {
        return Err(invalid(field, v, "is empty; remove it or give a command"));
    }
    if let Some((i, c)) = v.char_indices().find(|(_, c)| !c.is_ascii()) {
        return Err(invalid(
            field,
            v,
            format!(
                "character {c:?} at byte {i} is not ASCII; SetupComplete.cmd is run by cmd.exe \
                 in the OEM code page and must be ASCII only (use ASCII or call a script file)"
            ),
        ));
    }
    if let Some(c) = v.chars().find(|c| c.is_ascii_control() && *c != '\t') {
        return Err(invalid(
            field,
            v,
            format!("contains the control character {c:?}; give each command as one line"),
        ));
    }
    if v.len() > max {
        return Err(invalid(
            field,
            &v[..40],
            format!("is {} characters, more than cmd.exe's {max}", v.len()),
        ));
    }
    Ok(())
}

fn parse_v4(field: &'static str, v: &str) -> Result<Ipv4Addr> {
    v.trim().parse().map_err(|_| {
        invalid(
            field,
            v,
            "is not an IPv4 address; write four decimal numbers 0-255 separated by dots",
        )
    })
}

fn parse_v6(field: &'static str, v: &str) -> Result<Ipv6Addr> {
    v.trim()
        .parse()
        .map_err(|_| invalid(field, v, "is not an IPv6 address (e.g. fd00::5)"))
}

/// A subnet mask: contiguous ones from the top. Returns the prefix length.
fn mask_prefix(field: &'static str, v: &str) -> Result<u32> {
    let m = u32::from(parse_v4(field, v)?);
    let ones = m.leading_ones();
    if ones == 0 || m.checked_shl(ones).unwrap_or(0) != 0 {
        return Err(invalid(
            field,
            v,
            "is not a subnet mask; its ones must be contiguous from the left (e.g. 255.255.255.0)",
        ));
    }
    Ok(ones)
}

// ---------------------------------------------------------------------------------------
// Rendering

/// One SetupComplete.cmd step: a label for the log and one command line.
#[derive(Serialize)]
struct Step {
    label: String,
    command: String,
}

fn xml_escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
}

fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(true);
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env
}

/// Render the unattend template; every inserted string is XML-escaped.
fn render_xml(ctx: minijinja::Value) -> Result<String> {
    let mut env = environment();
    env.set_formatter(|out, _state, value| {
        let mut s = String::new();
        xml_escape(&value.to_string(), &mut s);
        out.write_str(&s).map_err(minijinja::Error::from)
    });
    render(&env, "unattend.xml", UNATTEND_TEMPLATE, ctx)
}

fn render(
    env: &minijinja::Environment<'_>,
    name: &'static str,
    source: &str,
    ctx: minijinja::Value,
) -> Result<String> {
    let err = |e: minijinja::Error| Error::Template {
        name,
        detail: e.to_string(),
    };
    env.render_str(source, ctx).map_err(err)
}

/// Base64 (RFC 4648 §4, with padding).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The `AdministratorPassword/Value` text for `PlainText` false: base64 of the UTF-16LE
/// bytes of the password followed by the element name "AdministratorPassword" (how Windows
/// System Image Manager hides passwords; an obfuscation, not encryption).
pub fn encode_admin_password(password: &Secret) -> Secret {
    let bytes: Vec<u8> = password
        .expose()
        .encode_utf16()
        .chain("AdministratorPassword".encode_utf16())
        .flat_map(u16::to_le_bytes)
        .collect();
    Secret(base64(&bytes))
}

/// Check a domain join blob: base64 text (what `djoin /provision` saves), so it goes into
/// the XML unchanged. Line breaks inside it are dropped.
fn normalise_blob(blob: &Secret) -> Result<Secret> {
    let s: String = blob
        .expose()
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let s = Secret(s);
    let what = "domain join blob";
    if let Some(pos) =
        s.0.chars()
            .position(|c| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=')))
    {
        return Err(Error::Secret {
            what,
            detail: format!(
                "character number {} is not base64; give the file `djoin /provision \
                 /savefile` wrote",
                pos + 1
            ),
        });
    }
    if s.0.is_empty() || !s.0.len().is_multiple_of(4) {
        return Err(Error::Secret {
            what,
            detail: format!(
                "its base64 text is {} characters, not a positive multiple of 4; the file is \
                 truncated or not a djoin blob",
                s.0.len()
            ),
        });
    }
    Ok(s)
}

// ---------------------------------------------------------------------------------------
// apply

/// Path of the control set Windows boots: `ControlSet%03u` of `Select!Current` when the hive
/// has it, else ControlSet001.
pub fn current_control_set(system: &Hive) -> String {
    let current = system
        .key("Select")
        .and_then(|k| k.value("Current"))
        .filter(|v| v.data_type == regf::value_type::REG_DWORD && v.data.len() == 4)
        .map(|v| u32::from_le_bytes([v.data[0], v.data[1], v.data[2], v.data[3]]))
        .filter(|n| (1..=999).contains(n))
        .unwrap_or(1);
    format!("ControlSet{current:03}")
}

fn set(
    hive: &mut Hive,
    hive_name: &str,
    key: &str,
    value: Value,
    shown: &str,
    ts: u64,
    report: &mut SettingsReport,
) -> Result<()> {
    let name = value.name.clone();
    let k = hive.create_key(key, ts)?;
    k.set_value(value)?;
    // Windows stamps a key's last write time whenever one of its values changes.
    k.last_written = ts;
    report
        .registry
        .push(format!("{hive_name}\\{key}!{name} = {shown}"));
    Ok(())
}

/// Write `bytes` to a file of the tree, creating its folders; new nodes take the security
/// descriptor of their nearest existing ancestor.
fn put_file(tree: &mut Tree, path: &str, bytes: Vec<u8>, ts: u64) -> Result<bool> {
    let (dir, name) = path.rsplit_once('\\').expect("paths here have a folder");
    let mut cur = Tree::ROOT;
    let mut security = tree.node(cur).meta.security;
    for part in dir.split('\\') {
        cur = match tree.child(cur, part) {
            Some(c) => c,
            None => {
                let meta = Meta {
                    security,
                    ..Meta::at(ts)
                };
                tree.add_dir(cur, part, meta)?
            }
        };
        security = tree.node(cur).meta.security.or(security);
    }
    if let Some(id) = tree.child(cur, name) {
        tree.set_data(id, Content::bytes(bytes))?;
        return Ok(true);
    }
    let meta = Meta {
        attributes: ATTR_ARCHIVE,
        security,
        ..Meta::at(ts)
    };
    let _: NodeId = tree.add_file(cur, name, meta, Content::bytes(bytes))?;
    Ok(false)
}

/// What the unattend file will hold once validated (secrets already encoded).
struct UnattendValues {
    computer_name: Option<String>,
    time_zone: Option<String>,
    registered_owner: Option<String>,
    registered_organization: Option<String>,
    admin_password: Option<Secret>,
    domain_join_blob: Option<Secret>,
}

fn unattend_values(s: &Settings, software: &Hive) -> Result<UnattendValues> {
    if s.admin_password.is_some() && s.secrets.admin_password.is_none() {
        return Err(Error::Secret {
            what: "administrator password",
            detail: "its source is set but it was not loaded; call Settings::load_secrets".into(),
        });
    }
    if s.domain_join_blob.is_some() && s.secrets.domain_join_blob.is_none() {
        return Err(Error::Secret {
            what: "domain join blob",
            detail: "its source is set but it was not loaded; call Settings::load_secrets".into(),
        });
    }
    for (field, v) in [
        ("time_zone", &s.time_zone),
        ("registered_owner", &s.registered_owner),
        ("registered_organization", &s.registered_organization),
    ] {
        if let Some(v) = v {
            validate_text(field, v)?;
        }
    }
    if let Some(tz) = &s.time_zone {
        // Check the id against the image's own list when the hive carries one.
        let zones = software.key("Microsoft\\Windows NT\\CurrentVersion\\Time Zones");
        if let Some(z) = zones {
            if z.subkey(tz).is_none() {
                return Err(invalid(
                    "time_zone",
                    tz,
                    "is not a time zone of this image (SOFTWARE\\Microsoft\\Windows NT\\\
                     CurrentVersion\\Time Zones); use a Windows time zone id such as \
                     \"Pacific Standard Time\" (`tzutil /l` lists them)",
                ));
            }
        }
    }
    let admin_password = match &s.secrets.admin_password {
        Some(p) => {
            if p.expose().chars().count() > MAX_PASSWORD_CHARS {
                return Err(Error::Secret {
                    what: "administrator password",
                    detail: format!("it is longer than {MAX_PASSWORD_CHARS} characters"),
                });
            }
            if p.expose().chars().any(char::is_control) {
                return Err(Error::Secret {
                    what: "administrator password",
                    detail: "it contains a control character (a line break?)".into(),
                });
            }
            Some(encode_admin_password(p))
        }
        None => None,
    };
    let domain_join_blob = match &s.secrets.domain_join_blob {
        Some(b) => Some(normalise_blob(b)?),
        None => None,
    };
    Ok(UnattendValues {
        computer_name: s.computer_name.clone(),
        time_zone: s.time_zone.clone(),
        registered_owner: s.registered_owner.clone(),
        registered_organization: s.registered_organization.clone(),
        admin_password,
        domain_join_blob,
    })
}

fn render_unattend(v: &UnattendValues) -> Result<String> {
    let ctx = minijinja::context! {
        computer_name => v.computer_name.as_deref(),
        time_zone => v.time_zone.as_deref(),
        registered_owner => v.registered_owner.as_deref(),
        registered_organization => v.registered_organization.as_deref(),
        administrator_password => v.admin_password.as_ref().map(Secret::expose),
        domain_join_blob => v.domain_join_blob.as_ref().map(Secret::expose),
    };
    render_xml(ctx)
}

/// The first-boot steps, in order: addresses, DNS, firewall, user commands.
fn setup_steps(s: &Settings) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    if let Some(n) = &s.network {
        let f = "interface";
        validate_cmd_text(f, &n.interface, MAX_TEXT_CHARS)?;
        if n.interface.contains(['"', '%', '^']) {
            return Err(invalid(
                f,
                &n.interface,
                "an interface name with '\"', '%' or '^' cannot be quoted for cmd.exe; rename \
                 the interface or set the address with a setup command",
            ));
        }
        let name = n.interface.trim();
        match (&n.ipv4_address, &n.ipv4_mask) {
            (Some(a), Some(m)) => {
                let addr = parse_v4("ipv4_address", a)?;
                let prefix = mask_prefix("ipv4_subnet_mask", m)?;
                let mask = Ipv4Addr::from(u32::MAX << (32 - prefix));
                let mut cmd = format!(
                    "netsh interface ipv4 set address name=\"{name}\" static {addr} {mask}"
                );
                if let Some(g) = &n.ipv4_gateway {
                    let gw = parse_v4("ipv4_gateway", g)?;
                    let bits = u32::from(mask);
                    if u32::from(gw) & bits != u32::from(addr) & bits {
                        return Err(invalid(
                            "ipv4_gateway",
                            g,
                            format!("is outside the subnet {addr}/{prefix}; the gateway must be on the interface's subnet"),
                        ));
                    }
                    cmd.push_str(&format!(" {gw}"));
                }
                steps.push(Step {
                    label: "static IPv4 address".into(),
                    command: cmd,
                });
            }
            (None, None) => {
                if let Some(g) = &n.ipv4_gateway {
                    return Err(invalid(
                        "ipv4_gateway",
                        g,
                        "needs ipv4_address and ipv4_subnet_mask",
                    ));
                }
            }
            (Some(a), None) => {
                return Err(invalid(
                    "ipv4_address",
                    a,
                    "needs ipv4_subnet_mask too (e.g. 255.255.255.0)",
                ))
            }
            (None, Some(m)) => {
                return Err(invalid("ipv4_subnet_mask", m, "needs ipv4_address too"))
            }
        }
        if let Some(a) = &n.ipv6_address {
            let f6 = "ipv6_address";
            let (addr, prefix) = match a.trim().split_once('/') {
                Some((ad, p)) => {
                    let len: u8 = p
                        .parse()
                        .ok()
                        .filter(|l| (1..=128).contains(l))
                        .ok_or_else(|| {
                            invalid(f6, a, "has a prefix length that is not 1 to 128")
                        })?;
                    (parse_v6(f6, ad)?, Some(len))
                }
                None => (parse_v6(f6, a)?, None),
            };
            let shown = match prefix {
                Some(p) => format!("{addr}/{p}"),
                None => addr.to_string(),
            };
            steps.push(Step {
                label: "static IPv6 address".into(),
                command: format!(
                    "netsh interface ipv6 add address interface=\"{name}\" address={shown}"
                ),
            });
        }
        let v4: Vec<IpAddr> = n
            .ipv4_dns
            .iter()
            .map(|d| parse_v4("ipv4_dns", d).map(IpAddr::V4))
            .collect::<Result<_>>()?;
        let v6: Vec<IpAddr> = n
            .ipv6_dns
            .iter()
            .map(|d| parse_v6("ipv6_dns", d).map(IpAddr::V6))
            .collect::<Result<_>>()?;
        for (family, servers) in [("ipv4", v4), ("ipv6", v6)] {
            for (i, d) in servers.iter().enumerate() {
                let command = if i == 0 {
                    format!("netsh interface {family} set dnsservers name=\"{name}\" static {d} primary validate=no")
                } else {
                    format!(
                        "netsh interface {family} add dnsservers name=\"{name}\" {d} index={} validate=no",
                        i + 1
                    )
                };
                steps.push(Step {
                    label: format!("{family} DNS server {}", i + 1),
                    command,
                });
            }
        }
    }
    if s.remote_management {
        steps.push(Step {
            label: format!("firewall rule for WinRM on TCP {WINRM_HTTP_PORT}"),
            command: format!(
                "netsh advfirewall firewall add rule name=\"WinRM {WINRM_HTTP_PORT}\" \
                 protocol=TCP dir=in localport={WINRM_HTTP_PORT} action=allow"
            ),
        });
    }
    for (i, c) in s.setup_commands.iter().enumerate() {
        validate_cmd_text("setup_commands", c, MAX_COMMAND_CHARS)?;
        steps.push(Step {
            label: format!("setup command {}", i + 1),
            command: c.trim().to_string(),
        });
    }
    Ok(steps)
}

/// Render SetupComplete.cmd: ASCII, every line ending in CRLF.
fn render_setup_complete(steps: &[Step]) -> Result<Vec<u8>> {
    let env = environment();
    let text = render(
        &env,
        "SetupComplete.cmd",
        SETUP_COMPLETE_TEMPLATE,
        minijinja::context! { steps => steps, log => SETUP_COMPLETE_LOG },
    )?;
    debug_assert!(
        text.is_ascii(),
        "every inserted value was checked to be ASCII"
    );
    let mut out = Vec::with_capacity(text.len() + text.len() / 16);
    for line in text.lines() {
        out.extend_from_slice(line.trim_end_matches('\r').as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    Ok(out)
}

/// Apply `settings` to the volume tree and the SYSTEM and SOFTWARE hives. Everything is
/// validated before anything is changed, so on error the tree and hives are untouched.
pub fn apply(
    settings: &Settings,
    tree: &mut Tree,
    system: &mut Hive,
    software: &mut Hive,
) -> Result<SettingsReport> {
    let ts = settings.timestamp;
    let mut report = SettingsReport {
        test_signing: settings.test_signing(),
        ..SettingsReport::default()
    };

    // Validate everything and render the files first.
    if let Some(n) = &settings.computer_name {
        validate_computer_name(n)?;
    }
    let unattend: Option<(Vec<u8>, String)> = match &settings.unattend_file {
        Some(path) => {
            let clashing: Vec<&str> = [
                (
                    "the administrator password",
                    settings.admin_password.is_some(),
                ),
                ("time_zone", settings.time_zone.is_some()),
                ("registered_owner", settings.registered_owner.is_some()),
                (
                    "registered_organization",
                    settings.registered_organization.is_some(),
                ),
                ("domain_blob", settings.domain_join_blob.is_some()),
            ]
            .into_iter()
            .filter_map(|(n, set)| set.then_some(n))
            .collect();
            if !clashing.is_empty() {
                return Err(Error::Conflict(format!(
                    "the unattend file is copied verbatim, so {} cannot be applied; put them in \
                     that file or drop --unattend",
                    clashing.join(", ")
                )));
            }
            Some((
                read_unattend_file(path)?,
                format!("{UNATTEND_PATH} (copied verbatim from {})", path.display()),
            ))
        }
        None => {
            let v = unattend_values(settings, software)?;
            let mut parts = Vec::new();
            for (label, on) in [
                ("computer name", v.computer_name.is_some()),
                ("time zone", v.time_zone.is_some()),
                ("registered owner", v.registered_owner.is_some()),
                (
                    "registered organization",
                    v.registered_organization.is_some(),
                ),
                ("administrator password", v.admin_password.is_some()),
                ("offline domain join", v.domain_join_blob.is_some()),
            ] {
                if on {
                    parts.push(label);
                }
            }
            if parts.is_empty() {
                None
            } else {
                Some((
                    render_unattend(&v)?.into_bytes(),
                    format!("{UNATTEND_PATH} ({})", parts.join(", ")),
                ))
            }
        }
    };
    let steps = setup_steps(settings)?;
    let setup_complete = if steps.is_empty() {
        None
    } else {
        Some(render_setup_complete(&steps)?)
    };

    // Then write.
    if let Some(name) = &settings.computer_name {
        let cs = current_control_set(system);
        for sub in ["ComputerName", "ActiveComputerName"] {
            let key = format!("{cs}\\Control\\ComputerName\\{sub}");
            set(
                system,
                "SYSTEM",
                &key,
                Value::sz("ComputerName", name),
                name,
                ts,
                &mut report,
            )?;
        }
        let key = format!("{cs}\\Services\\Tcpip\\Parameters");
        for v in ["Hostname", "NV Hostname"] {
            set(
                system,
                "SYSTEM",
                &key,
                Value::sz(v, name),
                name,
                ts,
                &mut report,
            )?;
        }
    }
    if settings.development {
        for v in ["AllowAllTrustedApps", "AllowDevelopmentWithoutDevLicense"] {
            set(
                software,
                "SOFTWARE",
                APP_MODEL_UNLOCK_KEY,
                Value::dword(v, 1),
                "dword:1",
                ts,
                &mut report,
            )?;
        }
    }
    if let Some((bytes, what)) = unattend {
        let len = bytes.len();
        let replaced = put_file(tree, UNATTEND_PATH, bytes, ts)?;
        report.files.push(format!(
            "{what}, {len} bytes{}",
            if replaced {
                ", replaced the image's"
            } else {
                ""
            }
        ));
    }
    if let Some(bytes) = setup_complete {
        let len = bytes.len();
        let replaced = put_file(tree, SETUP_COMPLETE_PATH, bytes, ts)?;
        report.files.push(format!(
            "{SETUP_COMPLETE_PATH} ({} steps, log {SETUP_COMPLETE_LOG}), {len} bytes{}",
            steps.len(),
            if replaced {
                ", replaced the image's"
            } else {
                ""
            }
        ));
    }
    Ok(report)
}

fn read_unattend_file(path: &Path) -> Result<Vec<u8>> {
    let err = |detail: String| Error::UnattendFile {
        path: path.display().to_string(),
        detail,
    };
    let len = std::fs::metadata(path)
        .map_err(|e| err(format!("cannot read it: {e}")))?
        .len();
    if len > MAX_UNATTEND_FILE {
        return Err(err(format!(
            "{len} bytes, more than the {MAX_UNATTEND_FILE} accepted for an answer file"
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    if bytes.is_empty() {
        return Err(err("it is empty".into()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Secret {
        Secret(s.to_string())
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        // RFC 4648 §10.
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn admin_password_encoding() {
        // "P" + "AdministratorPassword" in UTF-16LE starts 50 00 41 00 -> "UABBAG".
        let e = encode_admin_password(&secret("P"));
        assert!(e.expose().starts_with("UABBAG"), "{}", e.expose());
        assert_eq!(e.expose().len(), 4 * (22 * 2usize).div_ceil(3));
    }

    #[test]
    fn secret_is_redacted() {
        let s = secret("hunter2");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(format!("{s:?}"), "<redacted>");
        let all = Secrets {
            admin_password: Some(secret("hunter2")),
            domain_join_blob: None,
        };
        assert!(!format!("{all:?}").contains("hunter2"));
    }

    #[test]
    fn computer_names() {
        for ok in ["NANO1", "a", "web-01", "ABCDEFGHIJKLMNO", "1a"] {
            validate_computer_name(ok).unwrap();
        }
        for bad in [
            "",
            "ABCDEFGHIJKLMNOP",
            "12345",
            "-nano",
            "nano-",
            "na_no",
            "na no",
            "nano.lan",
            "näno",
        ] {
            let e = validate_computer_name(bad).unwrap_err().to_string();
            assert!(e.starts_with("setting computer_name"), "{e}");
        }
    }

    #[test]
    fn masks() {
        assert_eq!(mask_prefix("m", "255.255.255.0").unwrap(), 24);
        assert_eq!(mask_prefix("m", "255.255.255.255").unwrap(), 32);
        assert_eq!(mask_prefix("m", "128.0.0.0").unwrap(), 1);
        for bad in ["0.0.0.0", "255.0.255.0", "255.255.255.1", "300.0.0.0"] {
            assert!(mask_prefix("m", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn xml_escaping_in_template() {
        let v = UnattendValues {
            computer_name: Some("N".into()),
            time_zone: None,
            registered_owner: Some("A & B <x> \"q\" 'a'".into()),
            registered_organization: None,
            admin_password: None,
            domain_join_blob: None,
        };
        let x = render_unattend(&v).unwrap();
        assert!(x.contains(
            "<RegisteredOwner>A &amp; B &lt;x&gt; &quot;q&quot; &apos;a&apos;</RegisteredOwner>"
        ));
        assert!(x.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<unattend "));
        assert!(!x.contains("oobeSystem"));
        assert!(!x.contains("UnattendedJoin"));
    }

    #[test]
    fn current_control_set_from_select() {
        let mut h = Hive::new_empty("SYSTEM", 0);
        assert_eq!(current_control_set(&h), "ControlSet001");
        h.create_key("Select", 0).unwrap();
        h.set_value("Select", Value::dword("Current", 2)).unwrap();
        assert_eq!(current_control_set(&h), "ControlSet002");
    }

    #[test]
    fn secret_file_decoding() {
        assert_eq!(
            decode_secret_bytes(vec![0xFF, 0xFE, b'a', 0, b'b', 0]).as_deref(),
            Some("ab")
        );
        assert_eq!(
            decode_secret_bytes(vec![0xEF, 0xBB, 0xBF, b'x']).as_deref(),
            Some("x")
        );
        assert_eq!(trim_secret("pw\r\n".into()), "pw");
        assert_eq!(trim_secret("pw\n\n".into()), "pw\n");
    }

    #[test]
    fn blob_must_be_base64() {
        assert!(normalise_blob(&secret("QUJD\nREVG")).is_ok());
        let e = normalise_blob(&secret("QUJD<x>")).unwrap_err().to_string();
        assert!(!e.contains("QUJD"), "{e}");
        assert!(normalise_blob(&secret("QUJ")).is_err());
    }
}
