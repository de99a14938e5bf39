use super::*;

fn g(s: &str) -> Guid {
    s.parse().unwrap()
}

fn unhex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

/// The {bootmgr} device of the real Windows 10 ESP store quoted in facts-bcd.md §4.2.
#[test]
fn gpt_partition_device_matches_the_real_store() {
    let real = unhex(
        "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
         06 00 00 00 00 00 00 00 48 00 00 00 00 00 00 00
         9c b8 6a 1c bf bc be 4a 85 93 61 8e 4d 2f 58 11
         00 00 00 00 00 00 00 00 7d e8 41 55 a5 91 2b 4f
         ad 43 a0 34 5c 19 9e 9b 00 00 00 00 00 00 00 00
         00 00 00 00 00 00 00 00",
    );
    let d = Device::GptPartition {
        disk: g("{5541e87d-91a5-4f2b-ad43-a0345c199e9b}"),
        partition: g("{1c6ab89c-bcbf-4abe-8593-618e4d2f5811}"),
    };
    assert_eq!(d.to_bytes(), real);
    assert_eq!(Device::parse(&real), Some(d));
}

#[test]
fn devices_round_trip() {
    for d in [
        Device::MbrPartition {
            offset: 0x1f50_0000,
            signature: 0x43da_9ab1,
        },
        Device::Boot,
        Device::Locate {
            element: element::PATH,
        },
        Device::Ramdisk {
            options: GUID_RAMDISKOPTIONS,
            partition: Box::new(Device::GptPartition {
                disk: g("{0b2394a9-095e-487d-8d48-719ecd4d78ca}"),
                partition: g("{6cdfcd69-de75-4490-8f99-5a84bf264917}"),
            }),
            path: "\\Recovery\\WindowsRE\\Winre.wim".into(),
        },
    ] {
        let b = d.to_bytes();
        assert_eq!(Device::parse(&b), Some(d.clone()), "{d:?}");
    }
    // MBR layout, facts-bcd.md §4.3: offset at +0x20, style 1 at +0x34, signature at +0x38.
    let b = Device::MbrPartition {
        offset: 0x1f50_0000,
        signature: 0x43da_9ab1,
    }
    .to_bytes();
    assert_eq!(b.len(), 88);
    assert_eq!(&b[0x20..0x28], &[0, 0, 0x50, 0x1f, 0, 0, 0, 0]);
    assert_eq!(&b[0x34..0x38], &[1, 0, 0, 0]);
    assert_eq!(&b[0x38..0x3c], &[0xb1, 0x9a, 0xda, 0x43]);
}

#[test]
fn damaged_devices_never_panic() {
    let good = Device::GptPartition {
        disk: Guid::ZERO,
        partition: Guid::ZERO,
    }
    .to_bytes();
    for n in 0..good.len() {
        let _ = Device::parse(&good[..n]);
    }
    assert_eq!(Device::parse(&good[..0x10]), None);
    // Unknown style: kept raw.
    let mut b = good.clone();
    b[0x34] = 7;
    assert!(matches!(Device::parse(&b), Some(Device::Other { .. })));
    // A non-zero reserved byte: not a plain partition any more, kept byte for byte.
    let mut b = good.clone();
    b[0x50] = 1;
    assert_eq!(
        Device::parse(&b).map(|d| d.to_bytes()),
        Some(b.clone()),
        "kept as stored"
    );
    assert!(matches!(Device::parse(&b), Some(Device::Other { .. })));
    // Every single-byte change of a ramdisk device parses without panicking and writes
    // back the bytes it came from.
    let ram = Device::Ramdisk {
        options: GUID_RAMDISKOPTIONS,
        partition: Box::new(Device::Boot),
        path: "\\x.wim".into(),
    }
    .to_bytes();
    for i in 0..ram.len() {
        for v in [0u8, 1, 0x7f, 0xff] {
            let mut m = ram.clone();
            m[i] = v;
            if let Some(d) = Device::parse(&m) {
                assert_eq!(d.to_bytes(), m, "byte {i} = {v}");
            }
        }
    }
    // Ramdisk header with a truncated nested descriptor.
    let mut r = vec![0u8; 0x60];
    r[0x20] = 3;
    assert!(matches!(Device::parse(&r), Some(Device::Other { .. })));
}

#[test]
fn element_values_decode_by_format() {
    let v = |t, d: &[u8]| Value::new("Element", t, d.to_vec());
    use regf::value_type::*;
    assert_eq!(
        ElementValue::decode(0x2500_0004, &v(REG_BINARY, &[30])),
        ElementValue::Integer(30)
    );
    assert_eq!(
        ElementValue::decode(0x1600_000b, &v(REG_BINARY, &[1])),
        ElementValue::Boolean(true)
    );
    assert_eq!(
        ElementValue::decode(0x1200_0002, &v(REG_SZ, &[0x5c, 0, 0x41, 0, 0, 0, 0, 0])),
        ElementValue::String("\\A".into())
    );
    assert_eq!(
        ElementValue::decode(0x1700_0077, &v(REG_BINARY, &[0x75, 0, 0, 0x15, 0, 0, 0, 0])),
        ElementValue::IntegerList(vec![0x1500_0075])
    );
    let ol = Value::multi_sz("Element", &["{7ea2e1ac-2e61-4728-aaa3-896d9d0a9f0e}"]);
    assert_eq!(
        ElementValue::decode(0x1400_0006, &ol),
        ElementValue::ObjectList(vec![GUID_GLOBALSETTINGS])
    );
    // Too long for an integer, odd list: raw, not a panic.
    assert!(matches!(
        ElementValue::decode(0x2500_0004, &v(REG_BINARY, &[0; 9])),
        ElementValue::Raw { .. }
    ));
    assert!(matches!(
        ElementValue::decode(0x1700_0077, &v(REG_BINARY, &[0; 5])),
        ElementValue::Raw { .. }
    ));
    assert!(matches!(
        ElementValue::decode(0x2300_0003, &Value::sz("Element", "not a guid")),
        ElementValue::Raw { .. }
    ));
    // Encoding is what Windows stores: 8-byte integers, 1-byte booleans.
    assert_eq!(ElementValue::Integer(30).encode().data, 30u64.to_le_bytes());
    assert_eq!(ElementValue::Boolean(true).encode().data, vec![1]);
}

fn opts() -> BuildOptions {
    BuildOptions::new(
        Device::GptPartition {
            disk: g("{11111111-2222-4333-8444-555555555555}"),
            partition: g("{aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee}"),
        },
        Device::GptPartition {
            disk: g("{11111111-2222-4333-8444-555555555555}"),
            partition: g("{99999999-8888-4777-8666-555555555555}"),
        },
        b"unit-seed",
        0x01d9_0000_0000_0000,
    )
}

#[test]
fn scratch_store_has_bootmgr_and_loader() {
    let o = opts();
    let bytes = build(&o).unwrap();
    assert_eq!(bytes, build(&o).unwrap(), "deterministic");
    let s = Store::parse(&bytes).unwrap();
    let loader = o.loader_guid();
    assert_eq!(loader, Guid::derive(b"unit-seed", "bcd:osloader"));
    let bm = &s.objects[&GUID_BOOTMGR];
    assert_eq!(bm.object_type, object_type::BOOTMGR);
    assert_eq!(
        bm.elements[&element::DEVICE],
        ElementValue::Device(o.esp.clone())
    );
    assert_eq!(
        bm.elements[&element::BOOTMGR_DEFAULT],
        ElementValue::Object(loader)
    );
    assert_eq!(
        bm.elements[&element::BOOTMGR_DISPLAYORDER],
        ElementValue::ObjectList(vec![loader])
    );
    assert_eq!(
        bm.elements[&element::BOOTMGR_TIMEOUT],
        ElementValue::Integer(30)
    );
    let l = &s.objects[&loader];
    assert_eq!(l.object_type, object_type::OSLOADER);
    for (id, v) in [
        (element::DEVICE, ElementValue::Device(o.windows.clone())),
        (
            element::OSLOADER_OSDEVICE,
            ElementValue::Device(o.windows.clone()),
        ),
        (
            element::PATH,
            ElementValue::String("\\Windows\\system32\\winload.efi".into()),
        ),
        (
            element::OSLOADER_SYSTEMROOT,
            ElementValue::String("\\Windows".into()),
        ),
        (element::LOCALE, ElementValue::String("en-US".into())),
        (element::OSLOADER_NX, ElementValue::Integer(0)),
        (element::OSLOADER_BOOTMENUPOLICY, ElementValue::Integer(1)),
    ] {
        assert_eq!(l.elements[&id], v, "{id:08x}");
    }
    assert!(!s.objects.contains_key(&GUID_MEMDIAG));
    let text = s.render();
    assert!(text.contains("identifier              {bootmgr}"), "{text}");
    assert!(text.contains("default                 {default}"), "{text}");
    assert!(text.contains("nx                      OptIn"), "{text}");
    assert!(text.contains("bootmenupolicy          Standard"), "{text}");
}

/// A miniature BCD-Template: short integers, class-4 elements, EFI loader and resume
/// templates, memdiag.
fn template() -> Vec<u8> {
    let mut h = Hive::new_empty("NewStoreRoot", 5);
    h.create_key("Description", 5).unwrap();
    h.set_value("Description", Value::sz("KeyName", "BCD00000001"))
        .unwrap();
    let ts = 5;
    let put = |h: &mut Hive, o: &Guid, id, v: Value| {
        let p = format!("Objects\\{}\\Elements\\{id:08x}", o.braced());
        h.create_key(&p, ts).unwrap();
        h.set_value(&p, v).unwrap();
    };
    for (o, t) in [
        (GUID_BOOTMGR, object_type::BOOTMGR),
        (GUID_MEMDIAG, object_type::MEMDIAG),
        (GUID_TEMPLATE_OSLOADER_EFI, object_type::OSLOADER),
        (GUID_TEMPLATE_RESUME_EFI, object_type::RESUME),
        (GUID_GLOBALSETTINGS, object_type::INHERIT_ANY),
        (GUID_DBGSETTINGS, object_type::INHERIT_ANY),
        (GUID_NTLDR, object_type::NTLDR),
    ] {
        set_object_type(&mut h, &o, t, ts).unwrap();
    }
    put(
        &mut h,
        &GUID_BOOTMGR,
        0x2500_0004,
        Value::binary("Element", &[30]),
    );
    put(
        &mut h,
        &GUID_BOOTMGR,
        0x4500_0001,
        Value::binary("Element", &[1]),
    );
    put(
        &mut h,
        &GUID_DBGSETTINGS,
        0x1500_0011,
        Value::binary("Element", &[4]),
    );
    put(
        &mut h,
        &GUID_TEMPLATE_OSLOADER_EFI,
        0x1600_0060,
        Value::binary("Element", &[1]),
    );
    put(
        &mut h,
        &GUID_TEMPLATE_OSLOADER_EFI,
        0x2300_0003,
        Value::sz("Element", &GUID_TEMPLATE_RESUME_EFI.braced()),
    );
    put(
        &mut h,
        &GUID_TEMPLATE_OSLOADER_EFI,
        0x4200_0002,
        Value::sz("Element", "\\system32\\winload.efi"),
    );
    put(
        &mut h,
        &GUID_MEMDIAG,
        0x1600_000b,
        Value::binary("Element", &[1]),
    );
    h.to_bytes().unwrap()
}

#[test]
fn template_store_is_completed_like_bcdboot() {
    let mut o = opts();
    o.template = Some(template());
    o.timeout = Some(5);
    o.test_signing = true;
    o.ems = Some(Ems {
        port: 1,
        baud: 115_200,
    });
    o.debugger = Some(Debugger::Net {
        host: std::net::Ipv4Addr::new(192, 168, 0, 1),
        port: 50000,
        key: "a.b.c.d".into(),
    });
    let h = build_hive(&o).unwrap();
    assert_eq!(
        h.key("Description")
            .unwrap()
            .value("KeyName")
            .unwrap()
            .decode(),
        ValueData::Sz("BCD00000000".into())
    );
    let s = Store::from_hive(&h).unwrap();
    // Template-only objects are not carried over, class-4 elements are dropped.
    assert!(!s.objects.contains_key(&GUID_NTLDR));
    assert!(!s.objects.contains_key(&GUID_TEMPLATE_OSLOADER_EFI));
    for o in s.objects.values() {
        assert!(o.elements.keys().all(|id| id >> 28 != 4));
    }
    let (loader, resume) = (o.loader_guid(), o.resume_guid());
    let bm = &s.objects[&GUID_BOOTMGR];
    assert_eq!(
        bm.elements[&element::BOOTMGR_TIMEOUT],
        ElementValue::Integer(5)
    );
    assert_eq!(
        bm.elements[&element::BOOTMGR_RESUMEOBJECT],
        ElementValue::Object(resume)
    );
    assert_eq!(
        bm.elements[&element::BOOTMGR_TOOLSDISPLAYORDER],
        ElementValue::ObjectList(vec![GUID_MEMDIAG])
    );
    let l = &s.objects[&loader];
    assert_eq!(
        l.elements[&element::ISOLATEDCONTEXT],
        ElementValue::Boolean(true)
    );
    assert_eq!(
        l.elements[&element::OSLOADER_RESUMEOBJECT],
        ElementValue::Object(resume)
    );
    assert_eq!(
        l.elements[&element::TESTSIGNING],
        ElementValue::Boolean(true)
    );
    assert_eq!(
        l.elements[&element::OSLOADER_EMS],
        ElementValue::Boolean(true)
    );
    assert_eq!(
        l.elements[&element::OSLOADER_DEBUG],
        ElementValue::Boolean(true)
    );
    let r = &s.objects[&resume];
    assert_eq!(r.object_type, object_type::RESUME);
    assert_eq!(
        r.elements[&element::RESUME_FILEDEVICE],
        ElementValue::Device(o.windows.clone())
    );
    let m = &s.objects[&GUID_MEMDIAG];
    assert_eq!(
        m.elements[&element::DEVICE],
        ElementValue::Device(o.esp.clone())
    );
    let d = &s.objects[&GUID_DBGSETTINGS];
    assert_eq!(d.elements[&element::DEBUGTYPE], ElementValue::Integer(3));
    assert_eq!(
        d.elements[&element::HOSTIP],
        ElementValue::Integer(0xc0a8_0001)
    );
    let e = &s.objects[&GUID_EMSSETTINGS];
    assert_eq!(
        e.elements[&element::EMSBAUDRATE],
        ElementValue::Integer(115_200)
    );
    let text = s.render();
    assert!(
        text.contains("hostip                  192.168.0.1"),
        "{text}"
    );
    assert!(text.contains("debugtype               Net"), "{text}");
}

#[test]
fn non_bcd_hives_are_refused_with_the_path() {
    let h = Hive::new_empty("ROOT", 0);
    let e = Store::from_hive(&h).unwrap_err().to_string();
    assert!(e.contains("\\Objects"), "{e}");
    let mut h = Hive::new_empty("ROOT", 0);
    h.create_key("Objects\\notaguid", 0).unwrap();
    let e = Store::from_hive(&h).unwrap_err().to_string();
    assert!(e.contains("notaguid"), "{e}");
}
