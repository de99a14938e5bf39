//! Device elements (format 1): a 16-byte options-object GUID, then a device descriptor
//! `{type u32, flags u32, size u32, reserved u32, body}` (DiscUtils `DeviceElementValue.cs`
//! and `PartitionRecord.cs`; ntloader `include/bcd.h`; facts-bcd.md §4). All fields are
//! little-endian, GUIDs in the Microsoft mixed-endian form as in the GPT.

use crate::core::Guid;

/// Bytes of a partition (and boot) descriptor counted from its type field: DiscUtils
/// writes 0x48, every real store holds 0x48 (facts-bcd.md §4.1).
pub const PARTITION_DESCRIPTOR_SIZE: u32 = 0x48;
/// Total element length of a partition device: options GUID + descriptor.
pub const PARTITION_ELEMENT_LEN: usize = 16 + PARTITION_DESCRIPTOR_SIZE as usize;

/// Descriptor type numbers (ReactOS `bl.h` `BL_DEVICE_TYPE`; facts-bcd.md §4.6).
pub mod device_type {
    pub const BLOCK_IO: u32 = 0;
    pub const BOOT: u32 = 5;
    pub const PARTITION: u32 = 6;
    pub const LOCATE: u32 = 8;
}

/// Partition style at descriptor +0x24 (DiscUtils `PartitionRecord.cs`).
const STYLE_GPT: u32 = 0;
const STYLE_MBR: u32 = 1;
/// Block-io type 3 = ramdisk (ReactOS `bl.h` `BL_LOCAL_DEVICE_TYPE`).
const BLOCK_IO_RAMDISK: u32 = 3;

/// A device element value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    /// A partition of a GPT disk, by the disk GUID (GPT header +0x38) and the partition's
    /// unique GUID (entry +0x10): what bcdboot writes for the ESP and the Windows volume.
    GptPartition { disk: Guid, partition: Guid },
    /// A partition of an MBR disk by its byte offset and the disk signature (MBR +0x1B8).
    MbrPartition { offset: u64, signature: u32 },
    /// "boot": the partition the boot manager was loaded from.
    Boot,
    /// "locate": the boot manager searches the disks for the path held in element
    /// `element` of the same object (mistyprojects `device_locate.htm`: `locate=custom:
    /// 12000002`; kind 0 = "path from an element", descriptor +0x10 kind, +0x14 element
    /// id, +0x18 parent descriptor offset, 0 = none). Microsoft uses it on BIOS disks
    /// so that cloned disks keep booting.
    Locate { element: u32 },
    /// A WIM/VHD ramdisk: options object, nested partition, path.
    Ramdisk {
        options: Guid,
        partition: Box<Device>,
        path: String,
    },
    /// Anything else, kept as stored.
    Other {
        options: Guid,
        device_type: u32,
        data: Vec<u8>,
    },
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn guid_at(b: &[u8], at: usize) -> Option<Guid> {
    Some(Guid::from_mixed_endian(
        b.get(at..at.checked_add(16)?)?.try_into().ok()?,
    ))
}

/// Parse a partition/boot descriptor starting at its type field.
fn parse_descriptor(d: &[u8]) -> Option<Device> {
    match le32(d, 0)? {
        device_type::BOOT => Some(Device::Boot),
        device_type::PARTITION => match le32(d, 0x24)? {
            STYLE_GPT => Some(Device::GptPartition {
                partition: guid_at(d, 0x10)?,
                disk: guid_at(d, 0x28)?,
            }),
            STYLE_MBR => Some(Device::MbrPartition {
                offset: le64(d, 0x10)?,
                signature: le32(d, 0x28)?,
            }),
            _ => None,
        },
        _ => None,
    }
}

impl Device {
    /// Decode element bytes; `None` when they are too short for their own header. A
    /// device is typed only when writing it back gives the same bytes (so fields this
    /// model does not name are never lost); otherwise it stays [`Device::Other`].
    pub fn parse(b: &[u8]) -> Option<Device> {
        let d = Device::parse_typed(b)?;
        if matches!(d, Device::Other { .. }) || d.to_bytes() == b {
            return Some(d);
        }
        Some(Device::Other {
            options: guid_at(b, 0)?,
            device_type: le32(b, 0x10)?,
            data: b.to_vec(),
        })
    }

    fn parse_typed(b: &[u8]) -> Option<Device> {
        let options = guid_at(b, 0)?;
        let device_type = le32(b, 0x10)?;
        let other = || Device::Other {
            options,
            device_type,
            data: b.to_vec(),
        };
        let d = &b[0x10..];
        Some(match device_type {
            device_type::BOOT | device_type::PARTITION if options == Guid::ZERO => {
                parse_descriptor(d).unwrap_or_else(other)
            }
            device_type::LOCATE if le32(d, 0x10) == Some(0) && le32(d, 0x18) == Some(0) => {
                Device::Locate {
                    element: le32(d, 0x14)?,
                }
            }
            // Ramdisk (real ESP WinRE entry, ntloader `bcd_patch_dp`): block-io type 3 at
            // +0x20, a file-path header at +0x38 {version, length, type}, the nested
            // partition descriptor at +0x44 and the UTF-16 path at +0x8c.
            device_type::BLOCK_IO if le32(b, 0x20) == Some(BLOCK_IO_RAMDISK) => {
                match (b.get(0x44..0x8c).and_then(parse_descriptor), b.get(0x8c..)) {
                    (Some(p), Some(tail)) if tail.len() % 2 == 0 => {
                        let units: Vec<u16> = tail
                            .chunks_exact(2)
                            .map(|c| u16::from_le_bytes([c[0], c[1]]))
                            .take_while(|&u| u != 0)
                            .collect();
                        Device::Ramdisk {
                            options,
                            partition: Box::new(p),
                            path: String::from_utf16_lossy(&units),
                        }
                    }
                    _ => other(),
                }
            }
            _ => other(),
        })
    }

    /// Element bytes. Partition and boot devices are the 88-byte frame of facts-bcd.md
    /// §4.2–4.4; locate uses the same 0x48-byte descriptor size.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; PARTITION_ELEMENT_LEN];
        let put32 = |b: &mut Vec<u8>, at: usize, v: u32| {
            b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        };
        match self {
            Device::GptPartition { disk, partition } => {
                put32(&mut b, 0x10, device_type::PARTITION);
                put32(&mut b, 0x18, PARTITION_DESCRIPTOR_SIZE);
                b[0x20..0x30].copy_from_slice(&partition.to_mixed_endian());
                put32(&mut b, 0x34, STYLE_GPT);
                b[0x38..0x48].copy_from_slice(&disk.to_mixed_endian());
            }
            Device::MbrPartition { offset, signature } => {
                put32(&mut b, 0x10, device_type::PARTITION);
                put32(&mut b, 0x18, PARTITION_DESCRIPTOR_SIZE);
                b[0x20..0x28].copy_from_slice(&offset.to_le_bytes());
                put32(&mut b, 0x34, STYLE_MBR);
                put32(&mut b, 0x38, *signature);
            }
            Device::Boot => {
                put32(&mut b, 0x10, device_type::BOOT);
                put32(&mut b, 0x18, PARTITION_DESCRIPTOR_SIZE);
            }
            Device::Locate { element } => {
                put32(&mut b, 0x10, device_type::LOCATE);
                put32(&mut b, 0x18, PARTITION_DESCRIPTOR_SIZE);
                put32(&mut b, 0x24, *element);
            }
            Device::Ramdisk { .. } | Device::Other { .. } => {
                return self.raw_bytes();
            }
        }
        b
    }

    fn raw_bytes(&self) -> Vec<u8> {
        match self {
            Device::Other { data, .. } => data.clone(),
            Device::Ramdisk {
                options,
                partition,
                path,
            } => {
                let mut units: Vec<u8> = path.encode_utf16().flat_map(u16::to_le_bytes).collect();
                units.extend_from_slice(&[0, 0]);
                let total = 0x8c + units.len();
                let mut b = vec![0u8; 0x44];
                b[0..16].copy_from_slice(&options.to_mixed_endian());
                b[0x10..0x14].copy_from_slice(&device_type::BLOCK_IO.to_le_bytes());
                b[0x14..0x18].copy_from_slice(&1u32.to_le_bytes());
                b[0x18..0x1c].copy_from_slice(&((total - 0x10) as u32).to_le_bytes());
                b[0x20..0x24].copy_from_slice(&BLOCK_IO_RAMDISK.to_le_bytes());
                b[0x38..0x3c].copy_from_slice(&1u32.to_le_bytes());
                b[0x3c..0x40].copy_from_slice(&((total - 0x38) as u32).to_le_bytes());
                b[0x40..0x44].copy_from_slice(&5u32.to_le_bytes());
                b.extend_from_slice(&partition.to_bytes()[0x10..]);
                b.extend_from_slice(&units);
                b
            }
            _ => self.to_bytes(),
        }
    }

    /// The text bcdedit would print, with the GUIDs in place of a drive letter (an
    /// offline store has no drive letters).
    pub fn describe(&self) -> String {
        match self {
            Device::GptPartition { disk, partition } => {
                format!(
                    "partition={} (GPT disk {})",
                    partition.braced(),
                    disk.braced()
                )
            }
            Device::MbrPartition { offset, signature } => {
                format!("partition=offset {offset:#x} (MBR disk signature {signature:#010x})")
            }
            Device::Boot => "boot".into(),
            Device::Locate { element } => format!("locate=custom:{element:08x}"),
            Device::Ramdisk {
                options,
                partition,
                path,
            } => {
                let p = partition.describe();
                let p = p.strip_prefix("partition=").unwrap_or(&p).to_string();
                format!("ramdisk=[{p}]{path},{}", options.braced())
            }
            Device::Other {
                device_type, data, ..
            } => format!("unknown (device type {device_type}, {} bytes)", data.len()),
        }
    }
}
