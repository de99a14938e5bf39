//! Writing a system store the way `bcdboot <windir> /f UEFI` does (learn.microsoft.com
//! "BCDBoot command-line options"; object and element set from the real Windows 10 ESP
//! store and BCD-SYS `Templates/winload.reg`, facts-bcd.md §5.3).

use super::*;
use std::net::Ipv4Addr;

/// Emergency Management Services on a serial console (`bcdedit /emssettings`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ems {
    pub port: u32,
    pub baud: u32,
}

/// Kernel debugger transport (`bcdedit /dbgsettings`); debugtype numbers from
/// MicrosoftDocs `bcdlibrary-debuggertype.md`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Debugger {
    Serial {
        port: u32,
        baud: u32,
    },
    Net {
        host: Ipv4Addr,
        port: u16,
        key: String,
    },
    Ieee1394 {
        channel: u32,
    },
    Usb {
        target: String,
    },
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Bytes of the image's `Windows\System32\config\BCD-Template`, if it has one.
    pub template: Option<Vec<u8>>,
    /// Device of the boot manager (the ESP).
    pub esp: Device,
    /// Device and OS device of the Windows loader (the Windows partition).
    pub windows: Device,
    /// Seed for the new object GUIDs ([`Guid::derive`]).
    pub seed: Vec<u8>,
    /// FILETIME for the hive header and every new key.
    pub timestamp: u64,
    /// Boot manager and loader locale (bcdboot `/l`, default en-US).
    pub locale: String,
    /// Loader description.
    pub description: String,
    /// Boot menu timeout in seconds; `None` keeps the template's (30 from scratch).
    pub timeout: Option<u64>,
    pub ems: Option<Ems>,
    pub debugger: Option<Debugger>,
    pub test_signing: bool,
}

impl BuildOptions {
    /// Defaults for a GPT disk: no template, en-US, "Windows Server".
    pub fn new(esp: Device, windows: Device, seed: &[u8], timestamp: u64) -> Self {
        BuildOptions {
            template: None,
            esp,
            windows,
            seed: seed.to_vec(),
            timestamp,
            locale: "en-US".into(),
            description: "Windows Server".into(),
            timeout: None,
            ems: None,
            debugger: None,
            test_signing: false,
        }
    }

    /// GUID of the Windows boot loader object.
    pub fn loader_guid(&self) -> Guid {
        Guid::derive(&self.seed, "bcd:osloader")
    }

    /// GUID of the resume-from-hibernate object (only made when the template has one).
    pub fn resume_guid(&self) -> Guid {
        Guid::derive(&self.seed, "bcd:resume")
    }
}

/// Timeout when neither the options nor the template give one (BCD-Template's value).
const DEFAULT_TIMEOUT: u64 = 30;
/// Boot manager path on the ESP (BCD-Template {bootmgr}).
const BOOTMGR_PATH: &str = "\\EFI\\Microsoft\\Boot\\bootmgfw.efi";
const MEMTEST_PATH: &str = "\\EFI\\Microsoft\\Boot\\memtest.efi";
const WINLOAD_PATH: &str = "\\Windows\\system32\\winload.efi";
const WINRESUME_PATH: &str = "\\Windows\\system32\\winresume.efi";
const SYSTEMROOT: &str = "\\Windows";
/// Objects bcdboot copies from the template as they are (UA `BCD.cpp`, real ESP store).
const COPIED_GLOBALS: [Guid; 7] = [
    GUID_EMSSETTINGS,
    GUID_DBGSETTINGS,
    GUID_BADMEMORY,
    GUID_GLOBALSETTINGS,
    GUID_HYPERVISORSETTINGS,
    GUID_BOOTLOADERSETTINGS,
    GUID_RESUMELOADERSETTINGS,
];
/// Integer elements the template may store shorter than 8 bytes (UA pads them).
const INTEGER_FORMAT: u32 = 5;
/// Class 4 ("template") elements are bcdboot's instructions, not settings: never copied.
const TEMPLATE_CLASS: u32 = 4;

/// Build the store and write the hive bytes.
pub fn build(opts: &BuildOptions) -> Result<Vec<u8>> {
    Ok(build_hive(opts)?.to_bytes()?)
}

/// Copy object `g` from the template store into `hive`, dropping class-4 elements and
/// widening short integers to 8 bytes.
fn copy_object(hive: &mut Hive, tpl: &Store, g: &Guid, as_guid: &Guid, ts: u64) -> Result<bool> {
    let Some(o) = tpl.objects.get(g) else {
        return Ok(false);
    };
    set_object_type(hive, as_guid, o.object_type, ts)?;
    for (id, v) in &o.elements {
        if id >> 28 == TEMPLATE_CLASS {
            continue;
        }
        let v = match v {
            ElementValue::Raw { data, .. }
                if element_format(*id) == INTEGER_FORMAT && data.len() < 8 =>
            {
                let mut b = [0u8; 8];
                b[..data.len()].copy_from_slice(data);
                ElementValue::Integer(u64::from_le_bytes(b))
            }
            v => v.clone(),
        };
        set_element(hive, as_guid, *id, &v, ts)?;
    }
    Ok(true)
}

fn put(hive: &mut Hive, g: &Guid, id: u32, v: ElementValue, ts: u64) -> Result<()> {
    set_element(hive, g, id, &v, ts)
}

/// Set an element only when the object (from the template) does not have it yet.
fn put_default(hive: &mut Hive, g: &Guid, id: u32, v: ElementValue, ts: u64) -> Result<()> {
    let key = format!("Objects\\{}\\Elements\\{id:08x}", g.braced());
    if hive.key(&key).is_some() {
        return Ok(());
    }
    put(hive, g, id, v, ts)
}

/// Write the global objects of a fresh store literally (the values BCD-Template holds,
/// facts-bcd.md §5.2/§5.3).
fn scratch_globals(hive: &mut Hive, ts: u64) -> Result<()> {
    use ElementValue::*;
    for g in COPIED_GLOBALS {
        let t = match g {
            GUID_BOOTLOADERSETTINGS | GUID_HYPERVISORSETTINGS => object_type::INHERIT_OSLOADER,
            GUID_RESUMELOADERSETTINGS => object_type::INHERIT_RESUME,
            _ => object_type::INHERIT_ANY,
        };
        set_object_type(hive, &g, t, ts)?;
    }
    put(
        hive,
        &GUID_EMSSETTINGS,
        element::BOOTEMS,
        Boolean(false),
        ts,
    )?;
    put(hive, &GUID_DBGSETTINGS, element::DEBUGTYPE, Integer(4), ts)?;
    put(
        hive,
        &GUID_GLOBALSETTINGS,
        element::INHERIT,
        ObjectList(vec![GUID_DBGSETTINGS, GUID_EMSSETTINGS, GUID_BADMEMORY]),
        ts,
    )?;
    put(hive, &GUID_HYPERVISORSETTINGS, 0x2500_00f3, Integer(0), ts)?;
    put(hive, &GUID_HYPERVISORSETTINGS, 0x2500_00f4, Integer(1), ts)?;
    put(
        hive,
        &GUID_HYPERVISORSETTINGS,
        0x2500_00f5,
        Integer(115_200),
        ts,
    )?;
    put(
        hive,
        &GUID_BOOTLOADERSETTINGS,
        element::INHERIT,
        ObjectList(vec![GUID_GLOBALSETTINGS, GUID_HYPERVISORSETTINGS]),
        ts,
    )?;
    put(
        hive,
        &GUID_RESUMELOADERSETTINGS,
        element::INHERIT,
        ObjectList(vec![GUID_GLOBALSETTINGS]),
        ts,
    )?;
    Ok(())
}

/// Build the store as a hive model.
pub fn build_hive(opts: &BuildOptions) -> Result<Hive> {
    use ElementValue::*;
    let ts = opts.timestamp;
    let template = match &opts.template {
        Some(b) => Some(Store::parse(b).map_err(|e| {
            store_err(
                "BCD-Template",
                format!("{e}; give a readable BCD-Template or none"),
            )
        })?),
        None => None,
    };
    // The store's frame: the template's root (name, security) with a fresh Objects key,
    // or a new hive rooted at NewStoreRoot like every store bcdedit creates.
    let mut hive = match &opts.template {
        Some(b) => {
            let mut h = Hive::parse(b)?;
            h.root.remove_subkey("Objects");
            h.create_key("Objects", ts)?;
            h
        }
        None => {
            let mut h = Hive::new_empty("NewStoreRoot", ts);
            h.create_key("Objects", ts)?;
            h
        }
    };
    hive.base_block.last_written_timestamp = ts;
    hive.create_key("Description", ts)?;
    // A system store: KeyName BCD00000000, System and TreatAsSystem (real ESP store).
    hive.set_value("Description", Value::sz("KeyName", "BCD00000000"))?;
    hive.set_value("Description", Value::dword("System", 1))?;
    hive.set_value("Description", Value::dword("TreatAsSystem", 1))?;

    let loader = opts.loader_guid();
    let locale = String(opts.locale.clone());
    match &template {
        Some(t) => {
            for g in COPIED_GLOBALS {
                copy_object(&mut hive, t, &g, &g, ts)?;
            }
            copy_object(&mut hive, t, &GUID_BOOTMGR, &GUID_BOOTMGR, ts)?;
        }
        None => scratch_globals(&mut hive, ts)?,
    }

    // {bootmgr}: complete what the template gave.
    let bm = GUID_BOOTMGR;
    set_object_type(&mut hive, &bm, object_type::BOOTMGR, ts)?;
    put(
        &mut hive,
        &bm,
        element::DEVICE,
        Device(opts.esp.clone()),
        ts,
    )?;
    put(
        &mut hive,
        &bm,
        element::PATH,
        String(BOOTMGR_PATH.into()),
        ts,
    )?;
    put_default(
        &mut hive,
        &bm,
        element::DESCRIPTION,
        String("Windows Boot Manager".into()),
        ts,
    )?;
    put(&mut hive, &bm, element::LOCALE, locale.clone(), ts)?;
    put_default(
        &mut hive,
        &bm,
        element::INHERIT,
        ObjectList(vec![GUID_GLOBALSETTINGS]),
        ts,
    )?;
    put(&mut hive, &bm, element::BOOTMGR_DEFAULT, Object(loader), ts)?;
    put(
        &mut hive,
        &bm,
        element::BOOTMGR_DISPLAYORDER,
        ObjectList(vec![loader]),
        ts,
    )?;
    match opts.timeout {
        Some(t) => put(&mut hive, &bm, element::BOOTMGR_TIMEOUT, Integer(t), ts)?,
        None => put_default(
            &mut hive,
            &bm,
            element::BOOTMGR_TIMEOUT,
            Integer(DEFAULT_TIMEOUT),
            ts,
        )?,
    }

    // The Windows boot loader, from the template's UEFI OS loader when there is one.
    if let Some(t) = &template {
        copy_object(&mut hive, t, &GUID_TEMPLATE_OSLOADER_EFI, &loader, ts)?;
    }
    set_object_type(&mut hive, &loader, object_type::OSLOADER, ts)?;
    put(
        &mut hive,
        &loader,
        element::DEVICE,
        Device(opts.windows.clone()),
        ts,
    )?;
    put(
        &mut hive,
        &loader,
        element::PATH,
        String(WINLOAD_PATH.into()),
        ts,
    )?;
    put(
        &mut hive,
        &loader,
        element::DESCRIPTION,
        String(opts.description.clone()),
        ts,
    )?;
    put(&mut hive, &loader, element::LOCALE, locale.clone(), ts)?;
    put_default(
        &mut hive,
        &loader,
        element::INHERIT,
        ObjectList(vec![GUID_BOOTLOADERSETTINGS]),
        ts,
    )?;
    put(
        &mut hive,
        &loader,
        element::OSLOADER_OSDEVICE,
        Device(opts.windows.clone()),
        ts,
    )?;
    put(
        &mut hive,
        &loader,
        element::OSLOADER_SYSTEMROOT,
        String(SYSTEMROOT.into()),
        ts,
    )?;
    if template.is_none() {
        // What BCD-Template's UEFI loader template carries and the real ESP store's
        // loader holds (facts-bcd.md §5.2/§5.3).
        put(
            &mut hive,
            &loader,
            element::ISOLATEDCONTEXT,
            Boolean(true),
            ts,
        )?;
        put(
            &mut hive,
            &loader,
            element::ALLOWEDINMEMORYSETTINGS,
            IntegerList(vec![0x1500_0075]),
            ts,
        )?;
    }
    put(&mut hive, &loader, element::OSLOADER_NX, Integer(0), ts)?;
    put(
        &mut hive,
        &loader,
        element::OSLOADER_BOOTMENUPOLICY,
        Integer(1),
        ts,
    )?;
    // The template's loader points at the resume template; bcdboot re-points it below.
    hive.delete_key(&format!(
        "Objects\\{}\\Elements\\{:08x}",
        loader.braced(),
        element::OSLOADER_RESUMEOBJECT
    ))
    .ok();

    // Resume from hibernate, when the template has its UEFI resume template.
    if let Some(t) = &template {
        let resume = opts.resume_guid();
        if copy_object(&mut hive, t, &GUID_TEMPLATE_RESUME_EFI, &resume, ts)? {
            let w = Device(opts.windows.clone());
            put(&mut hive, &resume, element::DEVICE, w.clone(), ts)?;
            put(
                &mut hive,
                &resume,
                element::PATH,
                String(WINRESUME_PATH.into()),
                ts,
            )?;
            put(
                &mut hive,
                &resume,
                element::DESCRIPTION,
                String("Windows Resume Application".into()),
                ts,
            )?;
            put(&mut hive, &resume, element::LOCALE, locale.clone(), ts)?;
            put_default(
                &mut hive,
                &resume,
                element::INHERIT,
                ObjectList(vec![GUID_RESUMELOADERSETTINGS]),
                ts,
            )?;
            put(&mut hive, &resume, element::RESUME_FILEDEVICE, w, ts)?;
            put(
                &mut hive,
                &resume,
                element::RESUME_FILEPATH,
                String("\\hiberfil.sys".into()),
                ts,
            )?;
            put(
                &mut hive,
                &resume,
                element::RESUME_BOOTMENUPOLICY,
                Integer(1),
                ts,
            )?;
            put(
                &mut hive,
                &resume,
                element::RESUME_DEBUGOPTIONENABLED,
                Boolean(false),
                ts,
            )?;
            put(
                &mut hive,
                &loader,
                element::OSLOADER_RESUMEOBJECT,
                Object(resume),
                ts,
            )?;
            put(
                &mut hive,
                &bm,
                element::BOOTMGR_RESUMEOBJECT,
                Object(resume),
                ts,
            )?;
        }
        // Windows Memory Diagnostic, on the ESP.
        if copy_object(&mut hive, t, &GUID_MEMDIAG, &GUID_MEMDIAG, ts)? {
            let m = GUID_MEMDIAG;
            put(&mut hive, &m, element::DEVICE, Device(opts.esp.clone()), ts)?;
            put(
                &mut hive,
                &m,
                element::PATH,
                String(MEMTEST_PATH.into()),
                ts,
            )?;
            put_default(
                &mut hive,
                &m,
                element::DESCRIPTION,
                String("Windows Memory Diagnostic".into()),
                ts,
            )?;
            put(&mut hive, &m, element::LOCALE, locale, ts)?;
            put(
                &mut hive,
                &bm,
                element::BOOTMGR_TOOLSDISPLAYORDER,
                ObjectList(vec![m]),
                ts,
            )?;
        }
    }

    // Optional settings, where bcdedit puts them.
    if let Some(e) = &opts.ems {
        let g = GUID_EMSSETTINGS;
        set_object_type(&mut hive, &g, object_type::INHERIT_ANY, ts)?;
        put(&mut hive, &g, element::EMSPORT, Integer(e.port.into()), ts)?;
        put(
            &mut hive,
            &g,
            element::EMSBAUDRATE,
            Integer(e.baud.into()),
            ts,
        )?;
        put(&mut hive, &loader, element::OSLOADER_EMS, Boolean(true), ts)?;
    }
    if let Some(d) = &opts.debugger {
        let g = GUID_DBGSETTINGS;
        set_object_type(&mut hive, &g, object_type::INHERIT_ANY, ts)?;
        match d {
            Debugger::Serial { port, baud } => {
                put(&mut hive, &g, element::DEBUGTYPE, Integer(0), ts)?;
                put(
                    &mut hive,
                    &g,
                    element::DEBUGPORT,
                    Integer((*port).into()),
                    ts,
                )?;
                put(
                    &mut hive,
                    &g,
                    element::BAUDRATE,
                    Integer((*baud).into()),
                    ts,
                )?;
            }
            Debugger::Ieee1394 { channel } => {
                put(&mut hive, &g, element::DEBUGTYPE, Integer(1), ts)?;
                put(
                    &mut hive,
                    &g,
                    element::CHANNEL,
                    Integer((*channel).into()),
                    ts,
                )?;
            }
            Debugger::Usb { target } => {
                put(&mut hive, &g, element::DEBUGTYPE, Integer(2), ts)?;
                put(
                    &mut hive,
                    &g,
                    element::TARGETNAME,
                    String(target.clone()),
                    ts,
                )?;
            }
            Debugger::Net { host, port, key } => {
                put(&mut hive, &g, element::DEBUGTYPE, Integer(3), ts)?;
                // a.b.c.d packed as a << 24 | ... (mattifestation/BCD; facts-bcd.md §3.2).
                put(
                    &mut hive,
                    &g,
                    element::HOSTIP,
                    Integer(u32::from(*host).into()),
                    ts,
                )?;
                put(&mut hive, &g, element::PORT, Integer((*port).into()), ts)?;
                put(&mut hive, &g, element::KEY, String(key.clone()), ts)?;
            }
        }
        put(
            &mut hive,
            &loader,
            element::OSLOADER_DEBUG,
            Boolean(true),
            ts,
        )?;
    }
    if opts.test_signing {
        put(&mut hive, &loader, element::TESTSIGNING, Boolean(true), ts)?;
    }
    drop_dangling_references(&mut hive, ts)?;
    Ok(hive)
}

/// Template objects may point at objects bcdboot does not carry over (the template's
/// setup entries, an old store's resume object): drop those references, and elements
/// left with an empty list, so every reference in the store resolves.
fn drop_dangling_references(hive: &mut Hive, ts: u64) -> Result<()> {
    let store = Store::from_hive(hive)?;
    for (g, o) in &store.objects {
        for (id, v) in &o.elements {
            let key = format!("Objects\\{}\\Elements\\{id:08x}", g.braced());
            match v {
                ElementValue::Object(r) if !store.objects.contains_key(r) => {
                    hive.delete_key(&key)?;
                }
                ElementValue::ObjectList(l) if l.iter().any(|r| !store.objects.contains_key(r)) => {
                    let kept: Vec<Guid> = l
                        .iter()
                        .filter(|r| store.objects.contains_key(r))
                        .copied()
                        .collect();
                    if kept.is_empty() {
                        hive.delete_key(&key)?;
                    } else {
                        set_element(hive, g, *id, &ElementValue::ObjectList(kept), ts)?;
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}
