//! `nanoforge packages list --json` on media whose cabs are built by gcab: identities come
//! from update.mum inside each cab, not from the file name.
mod common;

use std::process::Command;

fn mum(name: &str, lang: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<assembly xmlns="urn:schemas-microsoft-com:asm.v3" manifestVersion="1.0">
  <assemblyIdentity name="{name}" version="10.0.14393.0" processorArchitecture="amd64" language="{lang}" publicKeyToken="31bf3856ad364e35"/>
  <package identifier="x" releaseType="Feature Pack"><update name="x"/></package>
</assembly>"#
    )
}

fn gcab(dir: &std::path::Path, out: &std::path::Path, mum_text: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("update.mum"), mum_text).unwrap();
    let st = Command::new(common::require("gcab"))
        .current_dir(dir)
        .arg("-cz")
        .arg(out)
        .arg("update.mum")
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn list_json_reads_identities_from_update_mum() {
    let tmp = common::tempdir();
    let root = tmp.path().join("media");
    let pk = root.join("NanoServer/Packages");
    std::fs::create_dir_all(pk.join("en-US")).unwrap();
    std::fs::write(root.join("NanoServer/NanoServer.wim"), b"w").unwrap();
    let cab = "Microsoft-NanoServer-IIS-Package";
    let feat = "Microsoft-NanoServer-IIS-Feature-Package";
    gcab(
        &tmp.path().join("n"),
        &pk.join(format!("{cab}.cab")),
        &mum(feat, "neutral"),
    );
    gcab(
        &tmp.path().join("l"),
        &pk.join(format!("en-US/{cab}_en-US.cab")),
        &mum(feat, "en-US"),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_nanoforge"))
        .args(["packages", "list", "--json", "--media"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["known"], "IIS");
    assert_eq!(
        v[0]["identity"],
        format!("{feat}~31bf3856ad364e35~amd64~~10.0.14393.0")
    );
    assert_eq!(
        v[0]["language_pack"]["identity"],
        format!("{feat}~31bf3856ad364e35~amd64~en-US~10.0.14393.0")
    );
}
