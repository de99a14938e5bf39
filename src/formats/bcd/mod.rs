//! Boot Configuration Data stores (the `\EFI\Microsoft\Boot\BCD` registry hive), after
//! the public notes collected in `docs/facts-bcd.md`:
//! - store layout `Objects\{guid}\Description\Type` and `Elements\XXXXXXXX\Element`:
//!   DiscUtils `Library/DiscUtils.BootConfig/DiscUtilsRegistryStorage.cs`, ntloader
//!   `libnt/bcd.c`, and a real Windows 10 ESP store (BAndysc/ASUS-TP300LD-ESP);
//! - object and element type bit fields and element ids: ReactOS
//!   `boot/environ/include/bcd.h`, MicrosoftDocs win32 `desktop-src/bcd/bcdelementtype.md`,
//!   phnt `ntbcd.h`, mattifestation/BCD `BCDTemplateFromScratch.ps1`;
//! - element value encodings (integers as 8-byte little-endian REG_BINARY, booleans as one
//!   byte, objects as braced GUID text): DiscUtils `IntegerElementValue.cs`,
//!   `BooleanElementValue.cs`, `IntegerListElementValue.cs`;
//! - device element layout (16-byte options GUID, then type / flags / size, then the
//!   partition body: GPT partition GUID at +0x20, style at +0x34, disk GUID at +0x38):
//!   DiscUtils `DeviceElementValue.cs` + `PartitionRecord.cs`, ntloader `include/bcd.h`,
//!   mistyprojects.co.uk BCDEdit `device_partition.htm` and `device_locate.htm`;
//! - what `bcdboot /f UEFI` writes: learn.microsoft.com "BCDBoot command-line options" and
//!   "BCD system store settings for UEFI", jpz4085/BCD-SYS `Linux/winload.sh`.
//!
//! [`Store::from_hive`] decodes a store into objects and typed elements, [`Store::render`]
//! prints it the way `bcdedit /enum all` does, [`build`] writes a store like
//! `bcdboot /f UEFI` (optionally from the image's `BCD-Template`).

mod build;
mod device;
mod names;

pub use build::{build, build_hive, BuildOptions, Debugger, Ems};
pub use device::Device;
pub use names::{element_name, object_alias};

use crate::core::Guid;
use crate::formats::regf::{self, Hive, Value, ValueData};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// {bootmgr}: the Windows Boot Manager object (phnt `ntbcd.h`, real ESP store).
pub const GUID_BOOTMGR: Guid = guid(
    0x9dea862c,
    0x5cdd,
    0x4e70,
    *b"\xac\xc1\xf3\x2b\x34\x4d\x47\x95",
);
/// {fwbootmgr}: the firmware boot manager.
pub const GUID_FWBOOTMGR: Guid = guid(
    0xa5a30fa2,
    0x3d06,
    0x4e9f,
    *b"\xb5\xf4\xa0\x1d\xf9\xd1\xfc\xba",
);
/// {memdiag}: Windows Memory Diagnostic.
pub const GUID_MEMDIAG: Guid = guid(
    0xb2721d73,
    0x1db4,
    0x4c62,
    *b"\xbf\x78\xc5\x48\xa8\x80\x14\x2d",
);
/// {ntldr}: the legacy OS loader.
pub const GUID_NTLDR: Guid = guid(
    0x466f5a88,
    0x0af2,
    0x4f76,
    *b"\x90\x38\x09\x5b\x17\x0d\xc2\x1c",
);
/// {globalsettings}.
pub const GUID_GLOBALSETTINGS: Guid = guid(
    0x7ea2e1ac,
    0x2e61,
    0x4728,
    *b"\xaa\xa3\x89\x6d\x9d\x0a\x9f\x0e",
);
/// {dbgsettings}.
pub const GUID_DBGSETTINGS: Guid = guid(
    0x4636856e,
    0x540f,
    0x4170,
    *b"\xa1\x30\xa8\x47\x76\xf4\xc6\x54",
);
/// {emssettings}.
pub const GUID_EMSSETTINGS: Guid = guid(
    0x0ce4991b,
    0xe6b3,
    0x4b16,
    *b"\xb2\x3c\x5e\x0d\x92\x50\xe5\xd9",
);
/// {badmemory}.
pub const GUID_BADMEMORY: Guid = guid(
    0x5189b25c,
    0x5558,
    0x4bf2,
    *b"\xbc\xa4\x28\x9b\x11\xbd\x29\xe2",
);
/// {bootloadersettings}.
pub const GUID_BOOTLOADERSETTINGS: Guid = guid(
    0x6efb52bf,
    0x1766,
    0x41db,
    *b"\xa6\xb3\x0e\xe5\xef\xf7\x2b\xd7",
);
/// {hypervisorsettings}.
pub const GUID_HYPERVISORSETTINGS: Guid = guid(
    0x7ff607e0,
    0x4395,
    0x11db,
    *b"\xb0\xde\x08\x00\x20\x0c\x9a\x66",
);
/// {kerneldbgsettings}.
pub const GUID_KERNELDBGSETTINGS: Guid = guid(
    0x313e8eed,
    0x7098,
    0x4586,
    *b"\xa9\xbf\x30\x9c\x61\xf8\xd4\x49",
);
/// {resumeloadersettings}, spelled `…-901b-…` as in every real store (phnt and the MS
/// docs print `…-4a90-…`; facts-bcd.md §2.2).
pub const GUID_RESUMELOADERSETTINGS: Guid = guid(
    0x1afa9c49,
    0x16ab,
    0x4a5c,
    *b"\x90\x1b\x21\x28\x02\xda\x94\x60",
);
/// {ramdiskoptions}.
pub const GUID_RAMDISKOPTIONS: Guid = guid(
    0xae5534e0,
    0xa924,
    0x466c,
    *b"\xb8\x36\x75\x85\x39\xa3\xee\x3a",
);
/// BCD-Template's OS loader template for UEFI.
pub const GUID_TEMPLATE_OSLOADER_EFI: Guid = guid(
    0xb012b84d,
    0xc47c,
    0x4ed5,
    *b"\xb7\x22\xc0\xc4\x21\x63\xe5\x69",
);
/// BCD-Template's resume template for UEFI.
pub const GUID_TEMPLATE_RESUME_EFI: Guid = guid(
    0x0c334284,
    0x9a41,
    0x4de1,
    *b"\x99\xba\xa7\xe8\x7e\x8f\xf0\x7e",
);

const fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
    let a = d1.to_be_bytes();
    let b = d2.to_be_bytes();
    let c = d3.to_be_bytes();
    Guid::from_bytes([
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5],
        d4[6], d4[7],
    ])
}

/// Object types (ReactOS `bcd.h` `BcdObjectType`; facts-bcd.md §2.1).
pub mod object_type {
    pub const FWBOOTMGR: u32 = 0x1010_0001;
    pub const BOOTMGR: u32 = 0x1010_0002;
    pub const OSLOADER: u32 = 0x1020_0003;
    pub const RESUME: u32 = 0x1020_0004;
    pub const MEMDIAG: u32 = 0x1020_0005;
    pub const NTLDR: u32 = 0x1030_0006;
    pub const FIRMWARE_APP: u32 = 0x101f_ffff;
    pub const INHERIT_ANY: u32 = 0x2010_0000;
    pub const INHERIT_OSLOADER: u32 = 0x2020_0003;
    pub const INHERIT_RESUME: u32 = 0x2020_0004;
    pub const DEVICE: u32 = 0x3000_0000;
}

/// Element ids used by the builder (ReactOS `bcd.h`, MicrosoftDocs `bcdelementtype.md`;
/// the same number means different things per object type, facts-bcd.md §3.1).
pub mod element {
    pub const DEVICE: u32 = 0x1100_0001;
    pub const PATH: u32 = 0x1200_0002;
    pub const DESCRIPTION: u32 = 0x1200_0004;
    pub const LOCALE: u32 = 0x1200_0005;
    pub const INHERIT: u32 = 0x1400_0006;
    pub const BADMEMORYACCESS: u32 = 0x1600_000b;
    pub const DEBUGTYPE: u32 = 0x1500_0011;
    pub const DEBUGPORT: u32 = 0x1500_0013;
    pub const BAUDRATE: u32 = 0x1500_0014;
    pub const CHANNEL: u32 = 0x1500_0015;
    pub const TARGETNAME: u32 = 0x1200_0016;
    pub const HOSTIP: u32 = 0x1500_001a;
    pub const PORT: u32 = 0x1500_001b;
    pub const KEY: u32 = 0x1200_001d;
    pub const BOOTEMS: u32 = 0x1600_0020;
    pub const EMSPORT: u32 = 0x1500_0022;
    pub const EMSBAUDRATE: u32 = 0x1500_0023;
    pub const TESTSIGNING: u32 = 0x1600_0049;
    pub const ISOLATEDCONTEXT: u32 = 0x1600_0060;
    pub const ALLOWEDINMEMORYSETTINGS: u32 = 0x1700_0077;
    pub const BOOTMGR_DISPLAYORDER: u32 = 0x2400_0001;
    pub const BOOTMGR_DEFAULT: u32 = 0x2300_0003;
    pub const BOOTMGR_TIMEOUT: u32 = 0x2500_0004;
    pub const BOOTMGR_RESUMEOBJECT: u32 = 0x2300_0006;
    pub const BOOTMGR_TOOLSDISPLAYORDER: u32 = 0x2400_0010;
    pub const OSLOADER_OSDEVICE: u32 = 0x2100_0001;
    pub const OSLOADER_SYSTEMROOT: u32 = 0x2200_0002;
    pub const OSLOADER_RESUMEOBJECT: u32 = 0x2300_0003;
    pub const OSLOADER_NX: u32 = 0x2500_0020;
    pub const OSLOADER_DEBUG: u32 = 0x2600_00a0;
    pub const OSLOADER_EMS: u32 = 0x2600_00b0;
    pub const OSLOADER_BOOTMENUPOLICY: u32 = 0x2500_00c2;
    pub const RESUME_FILEDEVICE: u32 = 0x2100_0001;
    pub const RESUME_FILEPATH: u32 = 0x2200_0002;
    pub const RESUME_DEBUGOPTIONENABLED: u32 = 0x2600_0006;
    pub const RESUME_BOOTMENUPOLICY: u32 = 0x2500_0008;
}

/// Most objects a store may hold: a real system store has about twenty; the bound keeps a
/// hostile hive from making the printer work without end.
pub const MAX_OBJECTS: usize = 4096;
/// Most elements per object (real objects have under forty).
pub const MAX_ELEMENTS: usize = 1024;

/// Everything that can go wrong decoding or building a store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Regf(#[from] regf::Error),
    /// The hive is not shaped like a BCD store.
    #[error("BCD {path}: {detail}")]
    Store { path: String, detail: String },
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn store_err(path: impl Into<String>, detail: impl Into<String>) -> Error {
    Error::Store {
        path: path.into(),
        detail: detail.into(),
    }
}

/// The value of one element, typed by the format nibble of its id (bits 24–27).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElementValue {
    Device(Device),
    String(String),
    Object(Guid),
    ObjectList(Vec<Guid>),
    Integer(u64),
    Boolean(bool),
    IntegerList(Vec<u64>),
    /// Data that does not fit its format (or an unknown format): kept as stored.
    Raw {
        data_type: u32,
        data: Vec<u8>,
    },
}

/// Format nibble of an element id (bcdelementtype.md: bits 24–27).
pub fn element_format(id: u32) -> u32 {
    (id >> 24) & 0xf
}

impl ElementValue {
    /// Decode the registry value of element `id`.
    pub fn decode(id: u32, v: &Value) -> ElementValue {
        let raw = || ElementValue::Raw {
            data_type: v.data_type,
            data: v.data.clone(),
        };
        let d = &v.data;
        match (element_format(id), v.decode()) {
            (1, _) => Device::parse(d)
                .map(ElementValue::Device)
                .unwrap_or_else(raw),
            // Windows sometimes stores strings with two terminating NULs (real stores):
            // any run of trailing NULs ends the text.
            (2, _) if v.data_type == regf::value_type::REG_SZ => utf16_trimmed(d)
                .map(ElementValue::String)
                .unwrap_or_else(raw),
            (3, ValueData::Sz(s)) => s
                .parse()
                .map(ElementValue::Object)
                .unwrap_or_else(|_| raw()),
            (4, ValueData::MultiSz(l)) => l
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| s.parse::<Guid>())
                .collect::<Result<Vec<_>, _>>()
                .map(ElementValue::ObjectList)
                .unwrap_or_else(|_| raw()),
            // Integers may be stored shorter than 8 bytes (DiscUtils
            // IntegerElementValue.cs; the template): zero-extend.
            (5, _) if !d.is_empty() && d.len() <= 8 => {
                let mut b = [0u8; 8];
                b[..d.len()].copy_from_slice(d);
                ElementValue::Integer(u64::from_le_bytes(b))
            }
            (6, _) if !d.is_empty() && d.len() <= 8 => {
                ElementValue::Boolean(d.iter().any(|&b| b != 0))
            }
            (7, _) if d.len().is_multiple_of(8) => ElementValue::IntegerList(
                d.chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().expect("8-byte chunk")))
                    .collect(),
            ),
            _ => raw(),
        }
    }

    /// The registry value `Element` for this element, as Windows writes it.
    pub fn encode(&self) -> Value {
        match self {
            ElementValue::Device(d) => Value::binary("Element", &d.to_bytes()),
            ElementValue::String(s) => Value::sz("Element", s),
            ElementValue::Object(g) => Value::sz("Element", &g.braced()),
            ElementValue::ObjectList(l) => {
                let s: Vec<String> = l.iter().map(Guid::braced).collect();
                let r: Vec<&str> = s.iter().map(String::as_str).collect();
                Value::multi_sz("Element", &r)
            }
            ElementValue::Integer(i) => Value::binary("Element", &i.to_le_bytes()),
            ElementValue::Boolean(b) => Value::binary("Element", &[u8::from(*b)]),
            ElementValue::IntegerList(l) => {
                let b: Vec<u8> = l.iter().flat_map(|i| i.to_le_bytes()).collect();
                Value::binary("Element", &b)
            }
            ElementValue::Raw { data_type, data } => {
                Value::new("Element", *data_type, data.clone())
            }
        }
    }
}

fn utf16_trimmed(d: &[u8]) -> Option<String> {
    if !d.len().is_multiple_of(2) {
        return None;
    }
    let mut units: Vec<u16> = d
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    while units.last() == Some(&0) {
        units.pop();
    }
    if units.contains(&0) {
        return None;
    }
    String::from_utf16(&units).ok()
}

/// One BCD object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub object_type: u32,
    pub elements: BTreeMap<u32, ElementValue>,
}

/// A decoded store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    pub objects: BTreeMap<Guid, Object>,
}

impl Store {
    /// Decode the objects of a BCD hive. Keys that are not objects are errors: their
    /// names would be needed to print them.
    pub fn from_hive(hive: &Hive) -> Result<Store> {
        let objs = hive
            .key("Objects")
            .ok_or_else(|| store_err("\\Objects", "key missing; this hive is not a BCD store"))?;
        if objs.subkeys.len() > MAX_OBJECTS {
            return Err(store_err(
                "\\Objects",
                format!(
                    "{} objects, more than the limit {MAX_OBJECTS}",
                    objs.subkeys.len()
                ),
            ));
        }
        let mut objects = BTreeMap::new();
        for k in &objs.subkeys {
            let path = format!("\\Objects\\{}", k.name);
            let id: Guid = k.name.parse().map_err(|_| {
                store_err(&path, "object key name is not a braced GUID {xxxxxxxx-...}")
            })?;
            let object_type = match k
                .subkey("Description")
                .and_then(|d| d.value("Type"))
                .map(Value::decode)
            {
                Some(ValueData::Dword(t)) => t,
                other => {
                    return Err(store_err(
                        format!("{path}\\Description"),
                        format!("value Type is {other:?}, expected a REG_DWORD object type"),
                    ))
                }
            };
            let mut elements = BTreeMap::new();
            if let Some(els) = k.subkey("Elements") {
                if els.subkeys.len() > MAX_ELEMENTS {
                    return Err(store_err(
                        format!("{path}\\Elements"),
                        format!("{} elements, more than {MAX_ELEMENTS}", els.subkeys.len()),
                    ));
                }
                for e in &els.subkeys {
                    let eid = u32::from_str_radix(&e.name, 16)
                        .ok()
                        .filter(|_| e.name.len() == 8)
                        .ok_or_else(|| {
                            store_err(
                                format!("{path}\\Elements\\{}", e.name),
                                "element key name is not 8 hex digits",
                            )
                        })?;
                    let v = e.value("Element").ok_or_else(|| {
                        store_err(
                            format!("{path}\\Elements\\{}", e.name),
                            "value Element missing",
                        )
                    })?;
                    elements.insert(eid, ElementValue::decode(eid, v));
                }
            }
            objects.insert(
                id,
                Object {
                    object_type,
                    elements,
                },
            );
        }
        Ok(Store { objects })
    }

    /// Parse hive bytes and decode them.
    pub fn parse(bytes: &[u8]) -> Result<Store> {
        Store::from_hive(&Hive::parse(bytes)?)
    }

    /// The object {bootmgr}'s `default` points at: bcdedit calls it {default}.
    pub fn default_object(&self) -> Option<Guid> {
        match self
            .objects
            .get(&GUID_BOOTMGR)?
            .elements
            .get(&element::BOOTMGR_DEFAULT)?
        {
            ElementValue::Object(g) => Some(*g),
            _ => None,
        }
    }

    /// Print every object like `bcdedit /enum all` (offline store: the default loader is
    /// shown as {default}; {current} is the running system's and never applies here).
    pub fn render(&self) -> String {
        let default = self.default_object();
        let ident = |g: &Guid| -> String {
            if Some(*g) == default {
                return "{default}".into();
            }
            object_alias(g)
                .map(str::to_string)
                .unwrap_or_else(|| g.braced())
        };
        // bcdedit lists the boot managers first, then applications, then the rest.
        let mut order: Vec<(&Guid, &Object)> = self.objects.iter().collect();
        order.sort_by_key(|(g, o)| {
            let rank = match o.object_type {
                object_type::FWBOOTMGR => 0,
                object_type::BOOTMGR => 1,
                t if t >> 28 == 1 => 2,
                t if t >> 28 == 3 => 4,
                _ => 3,
            };
            (rank, **g)
        });
        let mut out = String::new();
        for (g, o) in order {
            let title = names::object_title(g, o.object_type);
            let _ = writeln!(out, "{title}\n{}", "-".repeat(title.chars().count()));
            let _ = writeln!(out, "{:<24}{}", "identifier", ident(g));
            for (id, v) in &o.elements {
                let name = element_name(o.object_type, *id)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("custom:{id:08x}"));
                let lines = render_value(*id, v, &ident);
                for (i, l) in lines.iter().enumerate() {
                    let n = if i == 0 { name.as_str() } else { "" };
                    let _ = writeln!(out, "{n:<24}{l}");
                }
            }
            out.push('\n');
        }
        out
    }
}

fn render_value(id: u32, v: &ElementValue, ident: &dyn Fn(&Guid) -> String) -> Vec<String> {
    match v {
        ElementValue::Device(d) => vec![d.describe()],
        ElementValue::String(s) => vec![s.clone()],
        ElementValue::Object(g) => vec![ident(g)],
        ElementValue::ObjectList(l) if l.is_empty() => vec![String::new()],
        ElementValue::ObjectList(l) => l.iter().map(ident).collect(),
        ElementValue::Boolean(b) => vec![if *b { "Yes" } else { "No" }.into()],
        ElementValue::Integer(i) => vec![names::integer_text(id, *i)],
        ElementValue::IntegerList(l) => l.iter().map(|i| format!("{i:#x}")).collect(),
        ElementValue::Raw { data_type, data } => {
            vec![format!("(registry type {data_type}, {} bytes)", data.len())]
        }
    }
}

/// Set element `id` of object `obj` in a BCD hive, creating the keys (new keys take
/// `timestamp`).
pub fn set_element(
    hive: &mut Hive,
    obj: &Guid,
    id: u32,
    value: &ElementValue,
    timestamp: u64,
) -> Result<()> {
    let path = format!("Objects\\{}\\Elements\\{id:08x}", obj.braced());
    hive.create_key(&path, timestamp)?;
    hive.set_value(&path, value.encode())?;
    Ok(())
}

/// Create object `obj` of type `object_type` (or set the type of an existing one).
pub fn set_object_type(
    hive: &mut Hive,
    obj: &Guid,
    object_type: u32,
    timestamp: u64,
) -> Result<()> {
    let base = format!("Objects\\{}", obj.braced());
    hive.create_key(&format!("{base}\\Elements"), timestamp)?;
    let d = format!("{base}\\Description");
    hive.create_key(&d, timestamp)?;
    hive.set_value(&d, Value::dword("Type", object_type))?;
    Ok(())
}

#[cfg(test)]
mod tests;
