//! Boot check helpers shared by the boot tests: a GRUB EFI image standing in for the
//! boot manager, and an OVMF boot under qemu that returns the serial console output.

use crate::common::{require, run, run_ok, tool};
use std::path::Path;
use std::process::Command;

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// Build a GRUB EFI binary whose embedded grub.cfg runs `script` and halts.
pub fn grub_image(dir: &Path, script: &str) -> std::path::PathBuf {
    let cfg = dir.join("grub.cfg");
    std::fs::write(
        &cfg,
        format!(
            "insmod serial\nserial --unit=0 --speed=115200\nterminal_output serial\nterminal_input serial\n\
             insmod part_gpt\ninsmod fat\ninsmod ntfs\n{script}\nhalt\n"
        ),
    )
    .unwrap();
    let efi = dir.join("bootx64.efi");
    run_ok(
        tool("grub-mkstandalone")
            .args([
                "-O",
                "x86_64-efi",
                "--locales=",
                "--fonts=",
                "--themes=",
                "-o",
            ])
            .arg(&efi)
            .arg(format!("boot/grub/grub.cfg={}", cfg.display())),
    );
    efi
}

/// Boot `image` (format `fmt`) under OVMF and return what the serial console printed.
pub fn boot(image: &Path, fmt: &str, dir: &Path) -> String {
    for f in [OVMF_CODE, OVMF_VARS] {
        assert!(
            Path::new(f).exists(),
            "{f} missing: run `cargo xtask deps` (package ovmf)"
        );
    }
    let vars = dir.join("vars.fd");
    std::fs::copy(OVMF_VARS, &vars).unwrap();
    let out = run(Command::new(require("timeout"))
        .args(["180"])
        .arg(require("qemu-system-x86_64"))
        .args([
            "-machine",
            "q35",
            "-m",
            "256",
            "-nographic",
            "-no-reboot",
            "-net",
            "none",
            "-drive",
            &format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
            "-drive",
            &format!("if=pflash,format=raw,file={}", vars.display()),
            "-drive",
            &format!("file={},format={fmt},if=virtio", image.display()),
        ]));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
