//! Boot check: OVMF under qemu-system-x86_64 reads our VHDX, its GPT and FAT32 ESP, and
//! runs `\EFI\Boot\bootx64.efi` (a GRUB image from grub-mkstandalone) which prints a
//! marker and a file it reads from the ESP to the serial console.

mod common;

#[path = "common/boot.rs"]
mod boot;

use boot::{boot, grub_image};
use common::*;

#[test]
fn ovmf_boots_our_vhdx_and_grub_reads_the_esp() {
    let t = tempdir();
    let esp = t.path().join("esp");
    std::fs::create_dir_all(esp.join("EFI/Boot")).unwrap();
    std::fs::write(esp.join("hello.txt"), "esp-file-content-3f9a\n").unwrap();
    let efi = grub_image(
        t.path(),
        "search --file --set=root /hello.txt\necho NANOFORGE-BOOT-MARKER\ncat ($root)/hello.txt",
    );
    std::fs::copy(&efi, esp.join("EFI/Boot/bootx64.efi")).unwrap();
    let img = t.path().join("boot.vhdx");
    run_ok(
        nanoforge()
            .args(["disk", "create", "--size", "2GiB", "--esp-dir"])
            .arg(&esp)
            .arg("-o")
            .arg(&img),
    );
    let serial = boot(&img, "vhdx", t.path());
    assert!(
        serial.contains("NANOFORGE-BOOT-MARKER"),
        "no marker on the serial console:\n{serial}"
    );
    assert!(
        serial.contains("esp-file-content-3f9a"),
        "GRUB did not read the ESP file:\n{serial}"
    );
}
