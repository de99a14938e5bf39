//! Boot files step: what `bcdboot <windir> /f UEFI` copies onto the ESP
//! (learn.microsoft.com "BCDBoot command-line options"; file layout of a real Windows 10
//! ESP, facts-bcd.md §5.5): `Windows\Boot\EFI\*` to `EFI/Microsoft/Boot/`,
//! `Windows\Boot\Fonts\*` to `EFI/Microsoft/Boot/Fonts/`, `bootmgfw.efi` again as the
//! removable-media fallback `EFI/Boot/bootx64.efi` (UEFI 2.10 §3.5.1.1), and the store
//! at `EFI/Microsoft/Boot/BCD`.

use crate::formats::bcd::{self, BuildOptions};
use crate::formats::fat::EspFiles;
use crate::tree::{NameSpace, NodeId, Tree};
use std::io;

/// The boot manager inside the Windows volume.
pub const BOOTMGFW_SOURCE: &str = "Windows\\Boot\\EFI\\bootmgfw.efi";
/// The store template inside the Windows volume.
pub const BCD_TEMPLATE_SOURCE: &str = "Windows\\System32\\config\\BCD-Template";
/// Where the store goes on the ESP.
pub const BCD_PATH: &str = "EFI/Microsoft/Boot/BCD";
/// Removable-media boot path for x64 (UEFI 2.10 §3.5.1.1).
pub const FALLBACK_PATH: &str = "EFI/Boot/bootx64.efi";

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Add every file below `dir` to `out` under `prefix`, sorted by name.
fn collect(tree: &Tree, dir: NodeId, prefix: &str, out: &mut EspFiles) -> io::Result<()> {
    let mut children: Vec<(String, NodeId)> = tree
        .node(dir)
        .entries()
        .filter(|(_, e)| e.space != NameSpace::Dos)
        .map(|(n, e)| (String::from_utf16_lossy(n), e.node))
        .collect();
    children.sort();
    for (name, id) in children {
        let path = format!("{prefix}/{name}");
        let node = tree.node(id);
        if node.is_dir {
            collect(tree, id, &path, out)?;
        } else {
            let data = node
                .data
                .content
                .read_all()
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", tree.path_of(id))))?;
            out.insert(path, data);
        }
    }
    Ok(())
}

/// Read a file of the tree, or `None` when it does not exist.
fn read(tree: &Tree, path: &str) -> io::Result<Option<Vec<u8>>> {
    match tree.lookup(path) {
        None => Ok(None),
        Some(id) if tree.node(id).is_dir => Err(invalid(format!(
            "{path} in the Windows volume is a directory, expected a file"
        ))),
        Some(id) => Ok(Some(tree.node(id).data.content.read_all()?)),
    }
}

/// Collect the ESP files of a Windows volume and build its store. `opts.template` is
/// filled from the volume's BCD-Template when the caller left it empty.
pub fn boot_files(tree: &Tree, opts: &BuildOptions) -> io::Result<EspFiles> {
    let bootmgfw = read(tree, BOOTMGFW_SOURCE)?.ok_or_else(|| {
        invalid(format!(
            "the Windows volume has no {BOOTMGFW_SOURCE}: the image holds no UEFI boot \
             manager; use an image with the Windows\\Boot\\EFI folder"
        ))
    })?;
    let mut out = EspFiles::new();
    let efi = tree
        .lookup("Windows\\Boot\\EFI")
        .expect("bootmgfw.efi was found in it");
    collect(tree, efi, "EFI/Microsoft/Boot", &mut out)?;
    if let Some(fonts) = tree.lookup("Windows\\Boot\\Fonts") {
        if tree.node(fonts).is_dir {
            collect(tree, fonts, "EFI/Microsoft/Boot/Fonts", &mut out)?;
        }
    }
    out.insert(FALLBACK_PATH.into(), bootmgfw);
    let mut opts = opts.clone();
    if opts.template.is_none() {
        opts.template = read(tree, BCD_TEMPLATE_SOURCE)?;
    }
    let store = bcd::build(&opts).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("building {BCD_PATH}: {e}"),
        )
    })?;
    out.insert(BCD_PATH.into(), store);
    Ok(out)
}
