//! Names bcdedit prints: well-known object aliases (phnt `ntbcd.h`, bcdedit `/? ID`),
//! element names per object type (ReactOS `bcd.h`, mattifestation/BCD `BCD.psm1`,
//! MicrosoftDocs `bcdelementtype.md`), value names (MicrosoftDocs
//! `bcdosloader-nxpolicy.md`, `bcdlibrary-debuggertype.md`).

use super::*;

/// Alias bcdedit shows for a well-known object.
pub fn object_alias(g: &Guid) -> Option<&'static str> {
    const ALIASES: [(Guid, &str); 13] = [
        (GUID_BOOTMGR, "{bootmgr}"),
        (GUID_FWBOOTMGR, "{fwbootmgr}"),
        (GUID_MEMDIAG, "{memdiag}"),
        (GUID_NTLDR, "{ntldr}"),
        (GUID_GLOBALSETTINGS, "{globalsettings}"),
        (GUID_DBGSETTINGS, "{dbgsettings}"),
        (GUID_EMSSETTINGS, "{emssettings}"),
        (GUID_BADMEMORY, "{badmemory}"),
        (GUID_BOOTLOADERSETTINGS, "{bootloadersettings}"),
        (GUID_HYPERVISORSETTINGS, "{hypervisorsettings}"),
        (GUID_KERNELDBGSETTINGS, "{kerneldbgsettings}"),
        (GUID_RESUMELOADERSETTINGS, "{resumeloadersettings}"),
        (GUID_RAMDISKOPTIONS, "{ramdiskoptions}"),
    ];
    ALIASES.iter().find(|(k, _)| k == g).map(|(_, n)| *n)
}

/// Heading bcdedit prints above an object.
pub(crate) fn object_title(g: &Guid, t: u32) -> String {
    let s = match (*g, t) {
        (GUID_EMSSETTINGS, _) => "EMS Settings",
        (GUID_DBGSETTINGS, _) => "Debugger Settings",
        (GUID_BADMEMORY, _) => "RAM Defects",
        (GUID_GLOBALSETTINGS, _) => "Global Settings",
        (GUID_HYPERVISORSETTINGS, _) => "Hypervisor Settings",
        (GUID_BOOTLOADERSETTINGS, _) => "Boot Loader Settings",
        (GUID_RESUMELOADERSETTINGS, _) => "Resume Loader Settings",
        (GUID_RAMDISKOPTIONS, _) => "Ramdisk Options",
        (_, object_type::FWBOOTMGR) => "Firmware Boot Manager",
        (_, object_type::BOOTMGR) => "Windows Boot Manager",
        (_, object_type::OSLOADER) => "Windows Boot Loader",
        (_, object_type::RESUME) => "Resume from Hibernate",
        (_, object_type::MEMDIAG) => "Windows Memory Tester",
        (_, object_type::NTLDR) => "Windows Legacy OS Loader",
        (_, object_type::DEVICE) => "Device options",
        (_, t) if t >> 28 == 2 => "Inheritable Object",
        (_, t) => return format!("Firmware Application ({t:08x})"),
    };
    s.to_string()
}

/// Library elements (class 1) mean the same in every object.
fn library_name(id: u32) -> Option<&'static str> {
    Some(match id {
        0x1100_0001 => "device",
        0x1200_0002 => "path",
        0x1200_0004 => "description",
        0x1200_0005 => "locale",
        0x1400_0006 => "inherit",
        0x1500_0007 => "truncatememory",
        0x1400_0008 => "recoverysequence",
        0x1600_0009 => "recoveryenabled",
        0x1700_000a => "badmemorylist",
        0x1600_000b => "badmemoryaccess",
        0x1500_000c => "firstmegabytepolicy",
        0x1600_0010 => "bootdebug",
        0x1500_0011 => "debugtype",
        0x1500_0012 => "debugaddress",
        0x1500_0013 => "debugport",
        0x1500_0014 => "baudrate",
        0x1500_0015 => "channel",
        0x1200_0016 => "targetname",
        0x1600_0017 => "noumex",
        0x1500_0018 => "debugstart",
        0x1200_0019 => "busparams",
        0x1500_001a => "hostip",
        0x1500_001b => "port",
        0x1600_001c => "dhcp",
        0x1200_001d => "key",
        0x1600_0020 => "bootems",
        0x1500_0022 => "emsport",
        0x1500_0023 => "emsbaudrate",
        0x1200_0030 => "loadoptions",
        0x1600_0040 => "advancedoptions",
        0x1600_0041 => "optionsedit",
        0x1600_0046 => "graphicsmodedisabled",
        0x1600_0048 => "nointegritychecks",
        0x1600_0049 => "testsigning",
        0x1600_0060 => "isolatedcontext",
        0x1500_0065 => "displaymessage",
        0x1500_0066 => "displaymessageoverride",
        0x1700_0077 => "allowedinmemorysettings",
        0x1600_007e => "flightsigning",
        _ => return None,
    })
}

/// bcdedit's name of element `id` in an object of type `object_type`.
pub fn element_name(object_type: u32, id: u32) -> Option<&'static str> {
    if id >> 28 == 1 {
        return library_name(id);
    }
    // Application elements depend on the application type (low bits of the object type;
    // inheritable objects of class 2 carry the type they apply to the same way).
    let app = object_type & 0x000f_ffff;
    let class = object_type >> 28;
    Some(match (class, app, id) {
        (1 | 2, 1 | 2, 0x2400_0001) => "displayorder",
        (1 | 2, 1 | 2, 0x2400_0002) => "bootsequence",
        (1 | 2, 1 | 2, 0x2300_0003) => "default",
        (1 | 2, 1 | 2, 0x2500_0004) => "timeout",
        (1 | 2, 1 | 2, 0x2600_0005) => "resume",
        (1 | 2, 1 | 2, 0x2300_0006) => "resumeobject",
        (1 | 2, 1 | 2, 0x2400_0010) => "toolsdisplayorder",
        (1 | 2, 1 | 2, 0x2600_0020) => "displaybootmenu",
        (1 | 2, 1 | 2, 0x2600_0021) => "noerrordisplay",
        (1 | 2, 3, 0x2100_0001) => "osdevice",
        (1 | 2, 3, 0x2200_0002) => "systemroot",
        (1 | 2, 3, 0x2300_0003) => "resumeobject",
        (1 | 2, 3, 0x2600_0010) => "detecthal",
        (1 | 2, 3, 0x2200_0011) => "kernel",
        (1 | 2, 3, 0x2200_0012) => "hal",
        (1 | 2, 3, 0x2500_0020) => "nx",
        (1 | 2, 3, 0x2500_0021) => "pae",
        (1 | 2, 3, 0x2600_0022) => "winpe",
        (1 | 2, 3, 0x2600_0024) => "nocrashautoreboot",
        (1 | 2, 3, 0x2500_0080) => "safeboot",
        (1 | 2, 3, 0x2600_0090) => "bootlog",
        (1 | 2, 3, 0x2600_00a0) => "debug",
        (1 | 2, 3, 0x2600_00b0) => "ems",
        (1 | 2, 3, 0x2500_00c2) => "bootmenupolicy",
        (1 | 2, 3, 0x2500_00f0) => "hypervisorlaunchtype",
        (1 | 2, 3, 0x2500_00f3) => "hypervisordebugtype",
        (1 | 2, 3, 0x2500_00f4) => "hypervisordebugport",
        (1 | 2, 3, 0x2500_00f5) => "hypervisorbaudrate",
        (1 | 2, 4, 0x2100_0001) => "filedevice",
        (1 | 2, 4, 0x2200_0002) => "filepath",
        (1 | 2, 4, 0x2600_0006) => "debugoptionenabled",
        (1 | 2, 4, 0x2500_0008) => "bootmenupolicy",
        (1 | 2, 5, 0x2500_0001) => "passcount",
        (1 | 2, 5, 0x2500_0002) => "testmix",
        (3, _, 0x3500_0001) => "ramdiskimageoffset",
        (3, _, 0x3500_0002) => "ramdisktftpclientport",
        (3, _, 0x3100_0003) => "ramdisksdidevice",
        (3, _, 0x3200_0004) => "ramdisksdipath",
        (3, _, 0x3500_0005) => "ramdiskimagelength",
        (3, _, 0x3600_0006) => "exportascd",
        _ => return None,
    })
}

/// An integer element as bcdedit prints it.
pub(crate) fn integer_text(id: u32, v: u64) -> String {
    let named = match (id, v) {
        (element::OSLOADER_NX, 0) => "OptIn",
        (element::OSLOADER_NX, 1) => "OptOut",
        (element::OSLOADER_NX, 2) => "AlwaysOff",
        (element::OSLOADER_NX, 3) => "AlwaysOn",
        (element::OSLOADER_BOOTMENUPOLICY | element::RESUME_BOOTMENUPOLICY, 0) => "Legacy",
        (element::OSLOADER_BOOTMENUPOLICY | element::RESUME_BOOTMENUPOLICY, 1) => "Standard",
        (element::DEBUGTYPE | 0x2500_00f3, 0) => "Serial",
        (element::DEBUGTYPE | 0x2500_00f3, 1) => "1394",
        (element::DEBUGTYPE | 0x2500_00f3, 2) => "USB",
        (element::DEBUGTYPE | 0x2500_00f3, 3) => "Net",
        (element::DEBUGTYPE, 4) => "Local",
        (0x1500_0065 | 0x1500_0066, 3) => "Recovery",
        _ => "",
    };
    if !named.is_empty() {
        return named.to_string();
    }
    match id {
        element::HOSTIP => {
            // hostip packs a.b.c.d as (a << 24 | b << 16 | c << 8 | d) per
            // mattifestation/BCD; not checked against bcdedit.
            let b = (v as u32).to_be_bytes();
            format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3])
        }
        _ => v.to_string(),
    }
}
