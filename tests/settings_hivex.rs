//! Offline host settings checked by tools we did not write: the hives with `hivexregedit
//! --export` (libwin-hivex-perl), Unattend.xml with Python's XML parser (expat), the
//! encoded administrator password against `iconv -t UTF-16LE | base64`, and the bytes of
//! SetupComplete.cmd. Secrets must never show in the report, Debug output or errors.
mod common;

use common::hives::real_hives_dir;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use nanoforge::formats::regf::{Hive, Value};
use nanoforge::pipeline::settings::{
    apply, Network, SecretSource, Settings, SettingsReport, SETUP_COMPLETE_PATH, UNATTEND_PATH,
};
use nanoforge::tree::{Meta, Tree};

/// FILETIME of 2023-11-14 22:13:20 UTC (SOURCE_DATE_EPOCH 1700000000 in the other tests).
const TS: u64 = 133_444_736_000_000_000;
const PASSWORD: &str = "Pa$$w0rd<&>\"é€";
/// base64 of "offline domain join test blob, not a real one" (ASCII).
const BLOB: &str = "b2ZmbGluZSBkb21haW4gam9pbiB0ZXN0IGJsb2IsIG5vdCBhIHJlYWwgb25l";

// ---------------------------------------------------------------------------------------
// Fixtures (the real-hives folder, found as tests/regf_hivex.rs finds it)

/// Decompressed bytes of a real hive.
fn real_hive(name: &str) -> Vec<u8> {
    let src = real_hives_dir().join(format!("{name}.xz"));
    let o = common::run(common::tool("xz").arg("-dc").arg(&src));
    assert!(o.status.success(), "xz -dc {} failed", src.display());
    o.stdout
}

// ---------------------------------------------------------------------------------------
// Helpers

/// `hivexregedit --export` of a hive, parsed into key path -> (value name -> right side),
/// with REG_SZ written as hex(1) decoded back to text.
fn hivex_export(bytes: &[u8], key: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let dir = common::tempdir();
    let p = dir.path().join("hive");
    std::fs::write(&p, bytes).unwrap();
    let text = common::run_ok(
        common::tool("hivexregedit")
            .arg("--export")
            .arg(&p)
            .arg(key),
    );
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut cur = String::new();
    for l in text.lines().map(|l| l.trim_end_matches('\r')) {
        if l.starts_with('[') && l.ends_with(']') {
            // Key names are case-insensitive and real hives mix cases ("services").
            cur = l[1..l.len() - 1].to_ascii_lowercase();
            out.entry(cur.clone()).or_default();
        } else if let Some(rest) = l.strip_prefix('"') {
            let (name, rhs) = rest.split_once("\"=").expect("value line");
            let shown = match rhs.strip_prefix("hex(1):") {
                Some(h) => {
                    let b: Vec<u8> = h
                        .split(',')
                        .filter(|x| !x.is_empty())
                        .map(|x| u8::from_str_radix(x, 16).unwrap())
                        .collect();
                    let u: Vec<u16> = b
                        .chunks_exact(2)
                        .map(|p| u16::from_le_bytes([p[0], p[1]]))
                        .take_while(|&c| c != 0)
                        .collect();
                    format!("sz:{}", String::from_utf16(&u).unwrap())
                }
                None => rhs.to_string(),
            };
            out.get_mut(&cur).unwrap().insert(name.to_string(), shown);
        }
    }
    out
}

fn value<'a>(
    export: &'a BTreeMap<String, BTreeMap<String, String>>,
    key: &str,
    name: &str,
) -> &'a str {
    export
        .get(&key.to_ascii_lowercase())
        .unwrap_or_else(|| panic!("hivexregedit shows no key {key}"))
        .get(name)
        .unwrap_or_else(|| panic!("hivexregedit shows no value {key}!{name}"))
}

fn windows_tree() -> Tree {
    let mut t = Tree::new(Meta::at(TS));
    t.mkdir_p("Windows\\System32\\config", &Meta::at(TS))
        .unwrap();
    t
}

fn file_bytes(tree: &Tree, path: &str) -> Vec<u8> {
    let id = tree
        .lookup(path)
        .unwrap_or_else(|| panic!("{path} missing"));
    tree.node(id).data.content.read_all().unwrap()
}

/// Settings with secrets loaded from files in `dir` (the way a user gives them).
fn full_settings(dir: &Path) -> Settings {
    let pw = dir.join("admin.txt");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    // djoin writes its blob file as UTF-16LE with a byte order mark.
    let blob = dir.join("blob.txt");
    let mut b = vec![0xFF, 0xFE];
    b.extend(BLOB.encode_utf16().flat_map(u16::to_le_bytes));
    b.extend([0, 0]);
    std::fs::write(&blob, b).unwrap();
    let mut s = Settings {
        computer_name: Some("NANO-01".into()),
        admin_password: Some(SecretSource::File(pw)),
        time_zone: Some("W. Europe Standard Time".into()),
        registered_owner: Some("Ops & <Build> \"Team\"".into()),
        registered_organization: Some("Contoso 'Labs'".into()),
        domain_join_blob: Some(SecretSource::File(blob)),
        network: Some(Network {
            interface: "Ethernet 2".into(),
            ipv4_address: Some("192.168.10.20".into()),
            ipv4_mask: Some("255.255.255.0".into()),
            ipv4_gateway: Some("192.168.10.1".into()),
            ipv4_dns: vec!["192.168.10.2".into(), "9.9.9.9".into()],
            ipv6_address: Some("fd00:10::20/64".into()),
            ipv6_dns: vec!["fd00:10::2".into()],
        }),
        remote_management: true,
        setup_commands: vec![
            "powershell -NoProfile -Command \"Get-Date\"".into(),
            "echo second & echo done".into(),
        ],
        development: true,
        timestamp: TS,
        ..Settings::default()
    };
    s.load_secrets().unwrap();
    s
}

fn apply_fresh(s: &Settings) -> (Tree, Hive, Hive, SettingsReport) {
    let mut tree = windows_tree();
    let mut sys = Hive::new_empty("SYSTEM", TS);
    let mut soft = Hive::new_empty("SOFTWARE", TS);
    let r = apply(s, &mut tree, &mut sys, &mut soft).unwrap_or_else(|e| panic!("apply: {e}"));
    (tree, sys, soft, r)
}

/// The error of applying `s` to fresh hives; also checks nothing was changed.
fn apply_err(s: &Settings) -> String {
    let mut tree = windows_tree();
    let mut sys = Hive::new_empty("SYSTEM", TS);
    let mut soft = Hive::new_empty("SOFTWARE", TS);
    let (sys0, soft0, n0) = (sys.clone(), soft.clone(), tree.len());
    let e = apply(s, &mut tree, &mut sys, &mut soft)
        .expect_err("apply should refuse these settings")
        .to_string();
    assert_eq!(sys, sys0, "SYSTEM changed although apply failed");
    assert_eq!(soft, soft0, "SOFTWARE changed although apply failed");
    assert_eq!(tree.len(), n0, "the tree changed although apply failed");
    e
}

/// base64 of UTF-16LE(password + "AdministratorPassword"), computed by iconv and base64.
fn expected_password_value(password: &str) -> String {
    let mut iconv = common::tool("iconv")
        .args(["-f", "UTF-8", "-t", "UTF-16LE"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    iconv
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}AdministratorPassword").as_bytes())
        .unwrap();
    let utf16 = iconv.wait_with_output().unwrap();
    assert!(utf16.status.success(), "iconv failed");
    let mut b64 = common::tool("base64")
        .arg("-w0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    b64.stdin.take().unwrap().write_all(&utf16.stdout).unwrap();
    let out = b64.wait_with_output().unwrap();
    assert!(out.status.success(), "base64 failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Parse XML with Python's expat-based xml.etree (fails on anything not well-formed) and
/// print the unattend elements we set, one `tag=text` per line.
fn python_unattend_fields(xml: &[u8]) -> BTreeMap<String, String> {
    let dir = common::tempdir();
    let p = dir.path().join("Unattend.xml");
    std::fs::write(&p, xml).unwrap();
    let script = r#"
import sys, xml.etree.ElementTree as ET
ns = {'u': 'urn:schemas-microsoft-com:unattend'}
root = ET.parse(sys.argv[1]).getroot()
def find(pass_, comp, path):
    for s in root.findall('u:settings', ns):
        if s.get('pass') != pass_:
            continue
        for c in s.findall('u:component', ns):
            if c.get('name') == comp:
                e = c.find(path, ns)
                if e is not None:
                    return e.text
    return None
shell = 'Microsoft-Windows-Shell-Setup'
fields = {
    'ComputerName': find('specialize', shell, 'u:ComputerName'),
    'TimeZone': find('specialize', shell, 'u:TimeZone'),
    'RegisteredOwner': find('specialize', shell, 'u:RegisteredOwner'),
    'RegisteredOrganization': find('specialize', shell, 'u:RegisteredOrganization'),
    'AccountData': find('specialize', 'Microsoft-Windows-UnattendedJoin',
                        'u:Identification/u:Provisioning/u:AccountData'),
    'PasswordValue': find('oobeSystem', shell, 'u:UserAccounts/u:AdministratorPassword/u:Value'),
    'PlainText': find('oobeSystem', shell, 'u:UserAccounts/u:AdministratorPassword/u:PlainText'),
}
for k, v in fields.items():
    if v is not None:
        sys.stdout.buffer.write((k + '=' + v + '\n').encode('utf-8'))
"#;
    let out = common::run_ok(common::tool("python3").arg("-c").arg(script).arg(&p));
    out.lines()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn assert_no_secret(text: &str, what: &str) {
    for s in [PASSWORD, BLOB, &expected_b64_cached()] {
        assert!(!text.contains(s), "{what} shows a secret: {text}");
    }
    assert!(
        !text.contains("Pa$$w0rd"),
        "{what} shows the password: {text}"
    );
}

fn expected_b64_cached() -> String {
    use std::sync::OnceLock;
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| expected_password_value(PASSWORD)).clone()
}

// ---------------------------------------------------------------------------------------
// Tests

/// Computer name and AppModelUnlock values in hives made by our regf writer, as hivex reads them.
#[test]
fn fresh_hives_hold_computer_name_and_app_model_unlock() {
    let dir = common::tempdir();
    let s = full_settings(dir.path());
    let (_, sys, soft, report) = apply_fresh(&s);
    let sys_export = hivex_export(&sys.to_bytes().unwrap(), "\\");
    for key in [
        "\\ControlSet001\\Control\\ComputerName\\ComputerName",
        "\\ControlSet001\\Control\\ComputerName\\ActiveComputerName",
    ] {
        assert_eq!(value(&sys_export, key, "ComputerName"), "sz:NANO-01");
    }
    let tcpip = "\\ControlSet001\\Services\\Tcpip\\Parameters";
    assert_eq!(value(&sys_export, tcpip, "Hostname"), "sz:NANO-01");
    assert_eq!(value(&sys_export, tcpip, "NV Hostname"), "sz:NANO-01");

    let soft_export = hivex_export(&soft.to_bytes().unwrap(), "\\");
    let unlock = "\\Microsoft\\Windows\\CurrentVersion\\AppModelUnlock";
    assert_eq!(
        value(&soft_export, unlock, "AllowAllTrustedApps"),
        "dword:00000001"
    );
    assert_eq!(
        value(&soft_export, unlock, "AllowDevelopmentWithoutDevLicense"),
        "dword:00000001"
    );
    assert!(report.test_signing, "development turns test signing on");
    assert_eq!(report.registry.len(), 6, "{:?}", report.registry);
}

/// Select!Current picks the control set that gets the name.
#[test]
fn computer_name_goes_to_the_current_control_set() {
    let mut sys = Hive::new_empty("SYSTEM", TS);
    sys.create_key("Select", TS).unwrap();
    sys.set_value("Select", Value::dword("Current", 2)).unwrap();
    sys.create_key("ControlSet001\\Control", TS).unwrap();
    let mut soft = Hive::new_empty("SOFTWARE", TS);
    let mut tree = windows_tree();
    let s = Settings {
        computer_name: Some("web7".into()),
        timestamp: TS,
        ..Settings::default()
    };
    let r = apply(&s, &mut tree, &mut sys, &mut soft).unwrap();
    assert!(!r.test_signing);
    let e = hivex_export(&sys.to_bytes().unwrap(), "\\");
    assert_eq!(
        value(
            &e,
            "\\ControlSet002\\Control\\ComputerName\\ComputerName",
            "ComputerName"
        ),
        "sz:web7"
    );
    assert!(!e.contains_key("\\controlset001\\control\\computername"));
    // Nothing for the unattend beyond the name; no first-boot script without steps.
    assert!(tree.lookup(SETUP_COMPLETE_PATH).is_none());
    assert!(tree.lookup(UNATTEND_PATH).is_some());
}

/// A copy of a real SYSTEM hive: the name lands in the control set its Select!Current names
/// (read by hivex from the original), and the old name is replaced.
#[test]
fn real_system_hive_gets_the_computer_name() {
    let bytes = real_hive("SYSTEM");
    let select = hivex_export(&bytes, "\\Select");
    let current = value(&select, "\\Select", "Current");
    let n = u32::from_str_radix(current.strip_prefix("dword:").unwrap(), 16).unwrap();
    let cs = format!("\\ControlSet{n:03}");
    let before = hivex_export(&bytes, &format!("{cs}\\Control\\ComputerName"));
    assert_ne!(
        value(
            &before,
            &format!("{cs}\\Control\\ComputerName\\ComputerName"),
            "ComputerName"
        ),
        "sz:NANOHOST"
    );

    let mut sys = Hive::parse(&bytes).unwrap();
    let mut soft = Hive::new_empty("SOFTWARE", TS);
    let mut tree = windows_tree();
    let s = Settings {
        computer_name: Some("NANOHOST".into()),
        timestamp: TS,
        ..Settings::default()
    };
    apply(&s, &mut tree, &mut sys, &mut soft).unwrap();
    let out = sys.to_bytes().unwrap();
    let names = hivex_export(&out, &format!("{cs}\\Control\\ComputerName"));
    assert_eq!(
        value(
            &names,
            &format!("{cs}\\Control\\ComputerName\\ComputerName"),
            "ComputerName"
        ),
        "sz:NANOHOST"
    );
    assert_eq!(
        value(
            &names,
            &format!("{cs}\\Control\\ComputerName\\ActiveComputerName"),
            "ComputerName"
        ),
        "sz:NANOHOST"
    );
    let tcpip = format!("{cs}\\Services\\Tcpip\\Parameters");
    let t = hivex_export(&out, &tcpip);
    assert_eq!(value(&t, &tcpip, "Hostname"), "sz:NANOHOST");
    assert_eq!(value(&t, &tcpip, "NV Hostname"), "sz:NANOHOST");
    // Other values of the key are kept.
    let t0 = hivex_export(&bytes, &tcpip);
    for (k, v) in &t0[&tcpip.to_ascii_lowercase()] {
        if k != "Hostname" && k != "NV Hostname" {
            assert_eq!(value(&t, &tcpip, k), v, "{tcpip}!{k} changed");
        }
    }
}

/// Unattend.xml is well-formed XML (expat) and holds every setting, with the password value
/// iconv + base64 compute and PlainText false.
#[test]
fn unattend_xml_is_well_formed_and_holds_the_encoded_password() {
    let dir = common::tempdir();
    let s = full_settings(dir.path());
    let (tree, _, _, _) = apply_fresh(&s);
    let xml = file_bytes(&tree, UNATTEND_PATH);
    let f = python_unattend_fields(&xml);
    assert_eq!(f["ComputerName"], "NANO-01");
    assert_eq!(f["TimeZone"], "W. Europe Standard Time");
    assert_eq!(f["RegisteredOwner"], "Ops & <Build> \"Team\"");
    assert_eq!(f["RegisteredOrganization"], "Contoso 'Labs'");
    assert_eq!(f["AccountData"], BLOB);
    assert_eq!(f["PasswordValue"], expected_password_value(PASSWORD));
    assert_eq!(f["PlainText"], "false");
    let text = String::from_utf8(xml).unwrap();
    assert!(!text.contains("Pa$$w0rd"), "the password is in clear text");
}

/// An answer file with only the password: well-formed, no specialize pass; an existing
/// Unattend.xml is replaced and new folders take the Windows folder's security descriptor.
#[test]
fn password_only_unattend_replaces_the_images_file() {
    let dir = common::tempdir();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, PASSWORD).unwrap();
    let mut tree = windows_tree();
    let sd = tree
        .add_security(&nanoforge::formats::regf::default_security_descriptor())
        .unwrap();
    let win = tree.lookup("Windows").unwrap();
    let meta = Meta {
        security: Some(sd),
        ..Meta::at(TS)
    };
    tree.set_meta(win, meta.clone()).unwrap();
    let panther = tree.add_dir(win, "Panther", meta.clone()).unwrap();
    tree.add_file(
        panther,
        "unattend.xml",
        meta,
        nanoforge::tree::Content::bytes(b"old".to_vec()),
    )
    .unwrap();
    let mut s = Settings {
        admin_password: Some(SecretSource::File(pw)),
        remote_management: true,
        timestamp: TS,
        ..Settings::default()
    };
    s.load_secrets().unwrap();
    let mut sys = Hive::new_empty("SYSTEM", TS);
    let mut soft = Hive::new_empty("SOFTWARE", TS);
    let (sys0, soft0) = (sys.clone(), soft.clone());
    let r = apply(&s, &mut tree, &mut sys, &mut soft).unwrap();
    assert_eq!(sys, sys0, "no SYSTEM edits without a computer name");
    assert_eq!(soft, soft0, "no SOFTWARE edits without development mode");
    assert!(r.registry.is_empty() && !r.test_signing);
    assert!(r.files[0].contains("replaced"), "{:?}", r.files);
    let xml = file_bytes(&tree, UNATTEND_PATH);
    let f = python_unattend_fields(&xml);
    assert_eq!(f.len(), 2, "{f:?}");
    assert_eq!(f["PasswordValue"], expected_password_value(PASSWORD));
    assert!(!String::from_utf8(xml).unwrap().contains("specialize"));
    let scripts = tree.lookup("Windows\\Setup\\Scripts").unwrap();
    assert_eq!(tree.node(scripts).meta.security, Some(sd));
    let cmd = tree.lookup(SETUP_COMPLETE_PATH).unwrap();
    assert_eq!(tree.node(cmd).meta.security, Some(sd));
}

/// A user's answer file is copied byte for byte; settings it would silently drop are refused.
#[test]
fn user_unattend_file_is_copied_verbatim() {
    let dir = common::tempdir();
    let p = dir.path().join("mine.xml");
    let mine =
        b"<?xml version=\"1.0\"?>\r\n<unattend xmlns=\"urn:schemas-microsoft-com:unattend\"/>\r\n";
    std::fs::write(&p, mine).unwrap();
    let s = Settings {
        computer_name: Some("N1".into()),
        unattend_file: Some(p.clone()),
        timestamp: TS,
        ..Settings::default()
    };
    let (tree, _, _, r) = apply_fresh(&s);
    assert_eq!(file_bytes(&tree, UNATTEND_PATH), mine);
    assert!(r.files[0].contains("verbatim"), "{:?}", r.files);

    let s = Settings {
        unattend_file: Some(p),
        time_zone: Some("UTC".into()),
        ..Settings::default()
    };
    let e = apply_err(&s);
    assert!(e.contains("--unattend") && e.contains("time_zone"), "{e}");
}

/// SetupComplete.cmd: ASCII, CRLF only, the netsh lines, the WinRM rule, user commands in
/// order, everything logged (the script runs itself again with its output appended to the
/// log).
#[test]
fn setup_complete_is_ascii_crlf_with_netsh_lines() {
    let dir = common::tempdir();
    let s = full_settings(dir.path());
    let (tree, _, _, _) = apply_fresh(&s);
    let b = file_bytes(&tree, SETUP_COMPLETE_PATH);
    assert!(b.is_ascii(), "not ASCII");
    for (i, &c) in b.iter().enumerate() {
        if c == b'\n' {
            assert!(i > 0 && b[i - 1] == b'\r', "bare LF at byte {i}");
        }
        if c == b'\r' {
            assert_eq!(b.get(i + 1), Some(&b'\n'), "bare CR at byte {i}");
        }
    }
    assert!(b.ends_with(b"\r\n"));
    let text = String::from_utf8(b).unwrap();
    let lines: Vec<&str> = text.split("\r\n").collect();
    let expect = [
        "netsh interface ipv4 set address name=\"Ethernet 2\" static 192.168.10.20 255.255.255.0 192.168.10.1",
        "netsh interface ipv6 add address interface=\"Ethernet 2\" address=fd00:10::20/64",
        "netsh interface ipv4 set dnsservers name=\"Ethernet 2\" static 192.168.10.2 primary validate=no",
        "netsh interface ipv4 add dnsservers name=\"Ethernet 2\" 9.9.9.9 index=2 validate=no",
        "netsh interface ipv6 set dnsservers name=\"Ethernet 2\" static fd00:10::2 primary validate=no",
        "netsh advfirewall firewall add rule name=\"WinRM 5985\" protocol=TCP dir=in localport=5985 action=allow",
        "powershell -NoProfile -Command \"Get-Date\"",
        "echo second & echo done",
    ];
    let mut at = 0;
    for cmd in expect {
        let pos = lines[at..]
            .iter()
            .position(|l| *l == cmd)
            .unwrap_or_else(|| panic!("missing or out of order: {cmd}\n{text}"));
        at += pos + 1;
    }
    assert!(
        lines.contains(
            &"    call \"%~f0\" --logged >> \"%SystemRoot%\\Setup\\Scripts\\SetupComplete.log\" 2>&1"
        ),
        "{text}"
    );
    assert!(text.starts_with("@echo off\r\n"), "{text}");
}

/// The password and the blob never appear in the report, in Debug output or in errors.
#[test]
fn secrets_never_leak() {
    let dir = common::tempdir();
    let s = full_settings(dir.path());
    assert_no_secret(&format!("{s:?}"), "Settings Debug");
    assert_no_secret(&format!("{:?}", s.secrets), "Secrets Debug");
    let (_, _, _, r) = apply_fresh(&s);
    assert_no_secret(&format!("{r:?}"), "report Debug");
    assert_no_secret(&serde_json::to_string(&r).unwrap(), "report JSON");
    assert!(r.files.iter().any(|f| f.contains("administrator password")));

    // Errors raised while the secrets are loaded.
    let mut bad = full_settings(dir.path());
    bad.computer_name = Some("bad_name".into());
    assert_no_secret(&apply_err(&bad), "computer name error");
    let mut bad = full_settings(dir.path());
    bad.network.as_mut().unwrap().ipv4_gateway = Some("10.9.9.9".into());
    assert_no_secret(&apply_err(&bad), "gateway error");

    // Secrets that are refused do not show in the refusal.
    let blob = dir.path().join("bad-blob.txt");
    std::fs::write(&blob, format!("{BLOB}<&>")).unwrap();
    let mut bad = full_settings(dir.path());
    bad.domain_join_blob = Some(SecretSource::File(blob));
    bad.secrets.domain_join_blob = None;
    bad.load_secrets().unwrap();
    let e = apply_err(&bad);
    assert!(
        e.contains("domain join blob") && e.contains("not base64"),
        "{e}"
    );
    assert_no_secret(&e, "blob error");

    let pw = dir.path().join("long.txt");
    std::fs::write(&pw, format!("{PASSWORD}{}", "x".repeat(300))).unwrap();
    let mut bad = full_settings(dir.path());
    bad.admin_password = Some(SecretSource::File(pw));
    bad.secrets.admin_password = None;
    bad.load_secrets().unwrap();
    let e = apply_err(&bad);
    assert!(e.contains("longer than 256"), "{e}");
    assert_no_secret(&e, "password error");

    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "\n").unwrap();
    let mut s = Settings {
        admin_password: Some(SecretSource::File(empty)),
        ..Settings::default()
    };
    let e = s.load_secrets().unwrap_err().to_string();
    assert!(
        e.contains("administrator password") && e.contains("empty"),
        "{e}"
    );

    let mut s = Settings {
        admin_password: Some(SecretSource::Env(
            "NANOFORGE_TEST_UNSET_PASSWORD_VAR".into(),
        )),
        ..Settings::default()
    };
    let e = s.load_secrets().unwrap_err().to_string();
    assert!(
        e.contains("NANOFORGE_TEST_UNSET_PASSWORD_VAR is not set"),
        "{e}"
    );
}

/// A change to a valid network setting.
type NetworkEdit = dyn Fn(&mut Network);

/// Bad computer names, IP addresses, masks and non-ASCII commands give errors naming the
/// setting, the value and the rule.
#[test]
fn bad_values_give_clear_errors() {
    let name = |n: &str| Settings {
        computer_name: Some(n.into()),
        ..Settings::default()
    };
    for (n, why) in [
        ("", "1 to 15 characters"),
        ("NANOSERVER-0001X", "1 to 15 characters, this one has 16"),
        ("12345", "all digits"),
        ("-nano", "hyphen"),
        ("nano-", "hyphen"),
        ("nano_1", "'_' is not allowed"),
        ("nano.lan", "'.' is not allowed"),
        ("nänö", "'ä' is not allowed"),
    ] {
        let e = apply_err(&name(n));
        assert!(e.contains("computer_name") && e.contains(why), "{n:?}: {e}");
    }

    let net = |f: &dyn Fn(&mut Network)| {
        let mut n = Network {
            interface: "Ethernet".into(),
            ipv4_address: Some("10.0.0.5".into()),
            ipv4_mask: Some("255.255.255.0".into()),
            ..Network::default()
        };
        f(&mut n);
        Settings {
            network: Some(n),
            ..Settings::default()
        }
    };
    let cases: [(&NetworkEdit, &str); 8] = [
        (
            &|n| n.ipv4_address = Some("10.0.0.300".into()),
            "ipv4_address = \"10.0.0.300\": is not an IPv4 address",
        ),
        (
            &|n| n.ipv4_mask = Some("255.0.255.0".into()),
            "ipv4_subnet_mask = \"255.0.255.0\": is not a subnet mask",
        ),
        (
            &|n| n.ipv4_gateway = Some("10.0.1.1".into()),
            "is outside the subnet 10.0.0.5/24",
        ),
        (
            &|n| n.ipv4_dns = vec!["8.8.8".into()],
            "ipv4_dns = \"8.8.8\": is not an IPv4 address",
        ),
        (
            &|n| n.ipv6_address = Some("fd00::zz".into()),
            "ipv6_address = \"fd00::zz\": is not an IPv6 address",
        ),
        (
            &|n| n.ipv6_address = Some("fd00::1/129".into()),
            "prefix length that is not 1 to 128",
        ),
        (
            &|n| n.ipv6_dns = vec!["10.0.0.1".into()],
            "ipv6_dns = \"10.0.0.1\": is not an IPv6 address",
        ),
        (&|n| n.interface = "Eth\"ernet".into(), "interface"),
    ];
    for (f, want) in cases {
        let e = apply_err(&net(f));
        assert!(e.contains(want), "want {want:?} in: {e}");
    }

    let cmd = Settings {
        setup_commands: vec!["echo ok".into(), "echo café".into()],
        ..Settings::default()
    };
    let e = apply_err(&cmd);
    assert!(
        e.contains("setup_commands") && e.contains("'é'") && e.contains("not ASCII"),
        "{e}"
    );
    let cmd = Settings {
        setup_commands: vec!["echo a\r\necho b".into()],
        ..Settings::default()
    };
    let e = apply_err(&cmd);
    assert!(e.contains("one line"), "{e}");

    // A time zone the image does not know, when SOFTWARE lists them.
    let mut soft = Hive::new_empty("SOFTWARE", TS);
    soft.create_key("Microsoft\\Windows NT\\CurrentVersion\\Time Zones\\UTC", TS)
        .unwrap();
    let s = Settings {
        time_zone: Some("Mars Standard Time".into()),
        ..Settings::default()
    };
    let e = apply(
        &s,
        &mut windows_tree(),
        &mut Hive::new_empty("SYSTEM", TS),
        &mut soft,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("time_zone") && e.contains("not a time zone of this image"),
        "{e}"
    );
}

/// A build template's `[settings]` table deserialises; unknown keys are refused.
#[test]
fn settings_deserialise_from_toml() {
    let s: Settings = toml::from_str(
        r#"
computer_name = "NANO1"
admin_password = { env = "NANO_ADMIN_PASSWORD" }
domain_join_blob = { file = "odj.txt" }
remote_management = true
development = true
setup_commands = ["echo hi"]
[network]
interface = "Ethernet"
ipv4_address = "10.0.0.5"
ipv4_mask = "255.255.255.0"
"#,
    )
    .unwrap();
    assert_eq!(s.computer_name.as_deref(), Some("NANO1"));
    assert_eq!(
        s.admin_password,
        Some(SecretSource::Env("NANO_ADMIN_PASSWORD".into()))
    );
    assert_eq!(
        s.domain_join_blob,
        Some(SecretSource::File("odj.txt".into()))
    );
    assert!(s.test_signing());
    let p: Settings = toml::from_str("admin_password = \"prompt\"").unwrap();
    assert_eq!(p.admin_password, Some(SecretSource::Prompt));
    let e = toml::from_str::<Settings>("computer_name = \"A\"\nadmin_pasword = \"x\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("admin_pasword"), "{e}");
    // A password itself cannot be written in the template.
    assert!(toml::from_str::<Settings>("admin_password = \"hunter2\"").is_err());
}

/// Same settings, same bytes: nothing depends on the clock or on randomness.
#[test]
fn output_is_deterministic() {
    let dir = common::tempdir();
    let s = full_settings(dir.path());
    let (t1, sys1, soft1, r1) = apply_fresh(&s);
    let (t2, sys2, soft2, r2) = apply_fresh(&s);
    assert_eq!(r1, r2);
    assert_eq!(sys1.to_bytes().unwrap(), sys2.to_bytes().unwrap());
    assert_eq!(soft1.to_bytes().unwrap(), soft2.to_bytes().unwrap());
    for p in [UNATTEND_PATH, SETUP_COMPLETE_PATH] {
        assert_eq!(file_bytes(&t1, p), file_bytes(&t2, p));
    }
}
