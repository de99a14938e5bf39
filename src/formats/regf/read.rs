//! Reading a primary file: hive bins, cells and the records in them (spec, "Format of
//! primary files": "Hive bin", "Cell", "Index leaf", "Fast leaf", "Hash leaf",
//! "Index root", "Key node", "Key values list", "Key value", "Key security", "Big data").

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::base::{BaseBlock, BASE_BLOCK_SIZE};
use super::model::{Hive, Key, Value};
use super::names::{cmp_names, decode_name};
use super::{corrupt, le16, le32, le64, Error, Result, BIG_DATA_SEGMENT, HBIN_PAGE, MAX_DEPTH};

/// Offset value meaning "no cell".
pub(crate) const NO_CELL: u32 = 0xFFFF_FFFF;
/// Size of a hive bin header.
pub(crate) const HBIN_HEADER: usize = 32;
/// Decoded bytes allowed per input byte (plus [`BUDGET_SLACK`]). A sound hive decodes
/// to about its own size (every cell is referenced once); far more means cells are
/// referenced over and over, which only a hostile file does.
const BUDGET_PER_INPUT_BYTE: u64 = 8;
/// Fixed allowance on top of the per-byte budget, for tiny hives.
const BUDGET_SLACK: u64 = 1 << 20;
/// Bookkeeping charged per decoded key and value (the size of their in-memory records).
const KEY_COST: u64 = 160;
const VALUE_COST: u64 = 80;
/// Smallest key node: fixed part of 76 bytes plus the 4-byte cell size, 8-aligned. Bounds
/// how many subkeys a hive of a given size can really hold.
const MIN_KEY_NODE_CELL: usize = 80;

/// How strictly to read.
#[derive(Debug, Clone)]
pub struct ParseOptions<'a> {
    /// Strict (default): every structure must be well formed, the hive must be clean or
    /// recoverable from `logs`. Lenient (false): read what can be read, record what was
    /// skipped in [`Hive::warnings`], read a dirty primary file as it is when no logs help.
    pub validate: bool,
    /// New-format transaction logs (.LOG1, .LOG2 in that order), applied when the hive is
    /// dirty.
    pub logs: Vec<&'a [u8]>,
}

impl Default for ParseOptions<'_> {
    fn default() -> Self {
        ParseOptions {
            validate: true,
            logs: Vec::new(),
        }
    }
}

/// A hive bin header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HiveBin {
    /// Offset relative to the start of the hive bins data.
    pub offset: u32,
    pub size: u32,
    /// FILETIME, meaningful in the first bin only.
    pub timestamp: u64,
    pub spare: u32,
}

impl HiveBin {
    /// Decode the header at `abs` (file offset) that should describe the bin at `rel`.
    pub fn parse(data: &[u8], abs: usize, rel: u32) -> Result<HiveBin> {
        let h = data.get(abs..abs + HBIN_HEADER).ok_or_else(|| {
            corrupt(
                "hive bin",
                abs as u64,
                "header runs past the end of the file; the file is truncated",
            )
        })?;
        if &h[0..4] != b"hbin" {
            return Err(corrupt(
                "hive bin",
                abs as u64,
                format!("signature is {:02x?}, expected \"hbin\"", &h[0..4]),
            ));
        }
        let bin = HiveBin {
            offset: le32(h, 4),
            size: le32(h, 8),
            timestamp: le64(h, 20),
            spare: le32(h, 28),
        };
        if bin.offset != rel {
            return Err(corrupt(
                "hive bin",
                abs as u64 + 4,
                format!("offset field is {:#x}, expected {rel:#x}", bin.offset),
            ));
        }
        if bin.size == 0 || !(bin.size as usize).is_multiple_of(HBIN_PAGE) {
            return Err(corrupt(
                "hive bin",
                abs as u64 + 8,
                format!("size {:#x} is not a non-zero multiple of 4096", bin.size),
            ));
        }
        Ok(bin)
    }
}

/// A key node record (cell data starting with "nk").
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyNode {
    pub flags: u16,
    pub last_written_timestamp: u64,
    pub spare: u32,
    pub parent: u32,
    pub number_of_subkeys: u32,
    pub number_of_volatile_subkeys: u32,
    pub subkeys_list_offset: u32,
    pub volatile_subkeys_list_offset: u32,
    pub number_of_key_values: u32,
    pub key_values_list_offset: u32,
    pub key_security_offset: u32,
    pub class_name_offset: u32,
    /// Whole 32-bit field: low 16 bits largest subkey name length, high 16 bits
    /// virtualization/user flags and debug byte.
    pub largest_subkey_name_length: u32,
    pub largest_subkey_class_name_length: u32,
    pub largest_value_name_length: u32,
    pub largest_value_data_size: u32,
    pub work_var: u32,
    pub class_name_length: u16,
    pub key_name: Vec<u8>,
}

/// Fixed part of a key node before the name.
pub(crate) const KEY_NODE_FIXED: usize = 76;

impl KeyNode {
    /// Decode cell data at hive offset `off` (for messages).
    pub fn parse(c: &[u8], abs: u64) -> Result<KeyNode> {
        if c.len() < KEY_NODE_FIXED || &c[0..2] != b"nk" {
            return Err(corrupt("key node", abs, format!("expected \"nk\" and at least {KEY_NODE_FIXED} bytes, found {:02x?} in {} bytes", &c[..c.len().min(2)], c.len())));
        }
        let name_len = le16(c, 72) as usize;
        let key_name = c
            .get(KEY_NODE_FIXED..KEY_NODE_FIXED + name_len)
            .ok_or_else(|| {
                corrupt(
                    "key node",
                    abs + 72,
                    format!("name length {name_len} exceeds the {}-byte cell", c.len()),
                )
            })?
            .to_vec();
        Ok(KeyNode {
            flags: le16(c, 2),
            last_written_timestamp: le64(c, 4),
            spare: le32(c, 12),
            parent: le32(c, 16),
            number_of_subkeys: le32(c, 20),
            number_of_volatile_subkeys: le32(c, 24),
            subkeys_list_offset: le32(c, 28),
            volatile_subkeys_list_offset: le32(c, 32),
            number_of_key_values: le32(c, 36),
            key_values_list_offset: le32(c, 40),
            key_security_offset: le32(c, 44),
            class_name_offset: le32(c, 48),
            largest_subkey_name_length: le32(c, 52),
            largest_subkey_class_name_length: le32(c, 56),
            largest_value_name_length: le32(c, 60),
            largest_value_data_size: le32(c, 64),
            work_var: le32(c, 68),
            class_name_length: le16(c, 74),
            key_name,
        })
    }

    /// Encode as cell data (without the size field).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut c = Vec::with_capacity(KEY_NODE_FIXED + self.key_name.len());
        c.extend_from_slice(b"nk");
        c.extend_from_slice(&self.flags.to_le_bytes());
        c.extend_from_slice(&self.last_written_timestamp.to_le_bytes());
        for v in [
            self.spare,
            self.parent,
            self.number_of_subkeys,
            self.number_of_volatile_subkeys,
            self.subkeys_list_offset,
            self.volatile_subkeys_list_offset,
            self.number_of_key_values,
            self.key_values_list_offset,
            self.key_security_offset,
            self.class_name_offset,
            self.largest_subkey_name_length,
            self.largest_subkey_class_name_length,
            self.largest_value_name_length,
            self.largest_value_data_size,
            self.work_var,
        ] {
            c.extend_from_slice(&v.to_le_bytes());
        }
        c.extend_from_slice(&(self.key_name.len() as u16).to_le_bytes());
        c.extend_from_slice(&self.class_name_length.to_le_bytes());
        c.extend_from_slice(&self.key_name);
        c
    }
}

/// A key value record (cell data starting with "vk").
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyValue {
    /// Raw data size field; bit 31 set means the data sits in `data_offset`.
    pub data_size: u32,
    pub data_offset: u32,
    pub data_type: u32,
    pub flags: u16,
    pub spare: u16,
    pub name: Vec<u8>,
}

/// Fixed part of a key value before the name.
pub(crate) const KEY_VALUE_FIXED: usize = 20;
/// Bit of the data size meaning "data stored in the data offset field".
pub(crate) const DATA_INLINE: u32 = 0x8000_0000;
/// Key value flag: the name is 8-bit.
pub(crate) const VALUE_COMP_NAME: u16 = 0x0001;

impl KeyValue {
    /// Decode cell data.
    pub fn parse(c: &[u8], abs: u64) -> Result<KeyValue> {
        if c.len() < KEY_VALUE_FIXED || &c[0..2] != b"vk" {
            return Err(corrupt("key value", abs, format!("expected \"vk\" and at least {KEY_VALUE_FIXED} bytes, found {:02x?} in {} bytes", &c[..c.len().min(2)], c.len())));
        }
        let name_len = le16(c, 2) as usize;
        let name = c
            .get(KEY_VALUE_FIXED..KEY_VALUE_FIXED + name_len)
            .ok_or_else(|| {
                corrupt(
                    "key value",
                    abs + 2,
                    format!("name length {name_len} exceeds the {}-byte cell", c.len()),
                )
            })?
            .to_vec();
        Ok(KeyValue {
            data_size: le32(c, 4),
            data_offset: le32(c, 8),
            data_type: le32(c, 12),
            flags: le16(c, 16),
            spare: le16(c, 18),
            name,
        })
    }

    /// Encode as cell data.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut c = Vec::with_capacity(KEY_VALUE_FIXED + self.name.len());
        c.extend_from_slice(b"vk");
        c.extend_from_slice(&(self.name.len() as u16).to_le_bytes());
        c.extend_from_slice(&self.data_size.to_le_bytes());
        c.extend_from_slice(&self.data_offset.to_le_bytes());
        c.extend_from_slice(&self.data_type.to_le_bytes());
        c.extend_from_slice(&self.flags.to_le_bytes());
        c.extend_from_slice(&self.spare.to_le_bytes());
        c.extend_from_slice(&self.name);
        c
    }
}

/// A key security record (cell data starting with "sk").
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeySecurity {
    pub reserved: u16,
    pub flink: u32,
    pub blink: u32,
    pub reference_count: u32,
    pub security_descriptor: Vec<u8>,
}

/// Fixed part of a key security record.
pub(crate) const KEY_SECURITY_FIXED: usize = 20;

impl KeySecurity {
    /// Decode cell data.
    pub fn parse(c: &[u8], abs: u64) -> Result<KeySecurity> {
        if c.len() < KEY_SECURITY_FIXED || &c[0..2] != b"sk" {
            return Err(corrupt("key security", abs, format!("expected \"sk\" and at least {KEY_SECURITY_FIXED} bytes, found {:02x?} in {} bytes", &c[..c.len().min(2)], c.len())));
        }
        let size = le32(c, 16) as usize;
        let sd = c
            .get(KEY_SECURITY_FIXED..KEY_SECURITY_FIXED.saturating_add(size))
            .ok_or_else(|| {
                corrupt(
                    "key security",
                    abs + 16,
                    format!("descriptor size {size} exceeds the {}-byte cell", c.len()),
                )
            })?;
        Ok(KeySecurity {
            reserved: le16(c, 2),
            flink: le32(c, 4),
            blink: le32(c, 8),
            reference_count: le32(c, 12),
            security_descriptor: sd.to_vec(),
        })
    }

    /// Encode as cell data.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut c = Vec::with_capacity(KEY_SECURITY_FIXED + self.security_descriptor.len());
        c.extend_from_slice(b"sk");
        c.extend_from_slice(&self.reserved.to_le_bytes());
        c.extend_from_slice(&self.flink.to_le_bytes());
        c.extend_from_slice(&self.blink.to_le_bytes());
        c.extend_from_slice(&self.reference_count.to_le_bytes());
        c.extend_from_slice(&(self.security_descriptor.len() as u32).to_le_bytes());
        c.extend_from_slice(&self.security_descriptor);
        c
    }
}

struct Reader<'a> {
    data: &'a [u8],
    /// File offset one past the last byte of hive bins data that may be read.
    bins_end: usize,
    /// (start, end) of every well-formed hive bin, relative offsets, ascending.
    bins: Vec<(u32, u32)>,
    strict: bool,
    minor: u32,
    budget: u64,
    warnings: Vec<String>,
    visited: HashSet<u32>,
    security: HashMap<u32, Arc<[u8]>>,
}

impl<'a> Reader<'a> {
    fn abs(off: u32) -> u64 {
        BASE_BLOCK_SIZE as u64 + off as u64
    }

    fn charge(&mut self, n: u64, structure: &'static str, off: u32) -> Result<()> {
        let limit = self.budget;
        self.budget = self.budget.checked_sub(n).ok_or(Error::Expansion {
            structure,
            offset: Self::abs(off),
            limit,
        })?;
        Ok(())
    }

    /// Cell data of the cell at relative offset `off`.
    fn cell(&self, off: u32, structure: &'static str) -> Result<&'a [u8]> {
        let abs = Self::abs(off);
        if self.strict && !off.is_multiple_of(8) {
            return Err(corrupt(
                structure,
                abs,
                format!("cell offset {off:#x} is not 8-byte aligned"),
            ));
        }
        let start = abs as usize;
        if start.checked_add(4).is_none_or(|e| e > self.bins_end) {
            return Err(corrupt(structure, abs, format!("cell offset {off:#x} lies outside the hive bins data (ends at file offset {:#x})", self.bins_end)));
        }
        let raw = le32(self.data, start) as i32;
        let size = raw.unsigned_abs() as usize;
        if self.strict && raw >= 0 {
            return Err(corrupt(
                structure,
                abs,
                format!("cell is free (size {raw}), expected an allocated cell (negative size)"),
            ));
        }
        if size < 8 || (self.strict && !size.is_multiple_of(8)) {
            return Err(corrupt(
                structure,
                abs,
                format!("cell size {size} is not a multiple of 8 of at least 8"),
            ));
        }
        let end = start
            .checked_add(size)
            .filter(|&e| e <= self.bins_end)
            .ok_or_else(|| {
                corrupt(
                    structure,
                    abs,
                    format!(
                        "cell of {size} bytes runs past the hive bins data end at {:#x}",
                        self.bins_end
                    ),
                )
            })?;
        if self.strict {
            let i = self.bins.partition_point(|&(s, _)| s <= off);
            let inside = i > 0 && {
                let (s, e) = self.bins[i - 1];
                off >= s + HBIN_HEADER as u32 && (off as u64 + size as u64) <= e as u64
            };
            if !inside {
                return Err(corrupt(
                    structure,
                    abs,
                    format!("cell of {size} bytes at {off:#x} is not inside one hive bin"),
                ));
            }
        }
        Ok(&self.data[start + 4..end])
    }

    fn warn_or_fail(&mut self, e: Error) -> Result<()> {
        if self.strict {
            Err(e)
        } else {
            self.warnings.push(e.to_string());
            Ok(())
        }
    }

    fn subkey_offsets(&self, off: u32, out: &mut Vec<u32>, in_root: bool) -> Result<()> {
        let c = self.cell(off, "subkeys list")?;
        let abs = Self::abs(off);
        if c.len() < 4 {
            return Err(corrupt(
                "subkeys list",
                abs,
                "cell too small for a list header",
            ));
        }
        let sig = &c[0..2];
        let count = le16(c, 2) as usize;
        let elem = match sig {
            b"li" | b"ri" => 4,
            b"lf" | b"lh" => 8,
            _ => {
                return Err(corrupt(
                    "subkeys list",
                    abs,
                    format!("signature is {sig:02x?}, expected li, lf, lh or ri"),
                ))
            }
        };
        if 4 + count * elem > c.len() {
            return Err(corrupt(
                "subkeys list",
                abs,
                format!(
                    "{count} elements of {elem} bytes do not fit the {}-byte cell",
                    c.len()
                ),
            ));
        }
        // A hive cannot hold more distinct key nodes than fit in it; more offsets mean
        // the lists repeat themselves.
        let most = (self.bins_end / MIN_KEY_NODE_CELL).max(1);
        for i in 0..count {
            let at = 4 + i * elem;
            let target = le32(c, at);
            if sig == b"ri" {
                if in_root {
                    return Err(corrupt(
                        "subkeys list",
                        abs,
                        "an index root points to another index root",
                    ));
                }
                let sub = self.cell(target, "subkeys list")?;
                if sub.len() >= 2 && &sub[0..2] == b"ri" {
                    return Err(corrupt(
                        "subkeys list",
                        Self::abs(target),
                        "an index root points to another index root",
                    ));
                }
                self.subkey_offsets(target, out, true)?;
            } else {
                out.push(target);
            }
            if out.len() > most {
                return Err(corrupt("subkeys list", abs, format!("more than {most} subkeys referenced, more than the file can hold; the lists loop")));
            }
        }
        Ok(())
    }

    fn security(&mut self, off: u32) -> Result<Arc<[u8]>> {
        if let Some(sd) = self.security.get(&off) {
            return Ok(sd.clone());
        }
        let c = self.cell(off, "key security")?;
        let sk = KeySecurity::parse(c, Self::abs(off))?;
        if self.strict && (sk.security_descriptor.len() < 20 || sk.security_descriptor[0] != 1) {
            return Err(corrupt(
                "key security",
                Self::abs(off) + 20,
                "descriptor is not a self-relative descriptor of revision 1",
            ));
        }
        self.charge(sk.security_descriptor.len() as u64, "key security", off)?;
        let sd: Arc<[u8]> = Arc::from(sk.security_descriptor);
        self.security.insert(off, sd.clone());
        Ok(sd)
    }

    fn value_data(&mut self, vk: &KeyValue, off: u32) -> Result<Vec<u8>> {
        let size = (vk.data_size & !DATA_INLINE) as usize;
        if vk.data_size & DATA_INLINE != 0 {
            if size > 4 && self.strict {
                return Err(corrupt(
                    "key value",
                    Self::abs(off) + 4,
                    format!("inline data size is {size}, at most 4 fit the data offset field"),
                ));
            }
            return Ok(vk.data_offset.to_le_bytes()[..size.min(4)].to_vec());
        }
        if size == 0 {
            return Ok(Vec::new());
        }
        self.charge(size as u64, "key value", off)?;
        let c = self.cell(vk.data_offset, "value data")?;
        if size > BIG_DATA_SEGMENT && self.minor > 3 && c.len() >= 8 && &c[0..2] == b"db" {
            return self.big_data(c, vk.data_offset, size);
        }
        if c.len() < size {
            if self.strict {
                return Err(corrupt(
                    "value data",
                    Self::abs(vk.data_offset),
                    format!("data size is {size}, the cell holds only {} bytes", c.len()),
                ));
            }
            return Ok(c.to_vec());
        }
        Ok(c[..size].to_vec())
    }

    fn big_data(&mut self, c: &[u8], off: u32, size: usize) -> Result<Vec<u8>> {
        let count = le16(c, 2) as usize;
        let list_off = le32(c, 4);
        let list = self.cell(list_off, "big data segment list")?;
        if count * 4 > list.len() {
            return Err(corrupt(
                "big data",
                Self::abs(off) + 2,
                format!(
                    "{count} segments do not fit the {}-byte segment list",
                    list.len()
                ),
            ));
        }
        let mut out = Vec::with_capacity(size);
        for i in 0..count {
            if out.len() >= size {
                break;
            }
            let seg_off = le32(list, i * 4);
            let seg = self.cell(seg_off, "big data segment")?;
            let take = (size - out.len()).min(BIG_DATA_SEGMENT).min(seg.len());
            out.extend_from_slice(&seg[..take]);
        }
        if out.len() < size && self.strict {
            return Err(corrupt(
                "big data",
                Self::abs(off),
                format!("segments hold {} bytes, the value needs {size}", out.len()),
            ));
        }
        Ok(out)
    }

    fn value(&mut self, off: u32) -> Result<Value> {
        self.charge(VALUE_COST, "key value", off)?;
        let c = self.cell(off, "key value")?;
        let vk = KeyValue::parse(c, Self::abs(off))?;
        self.charge(vk.name.len() as u64, "key value", off)?;
        let name = decode_name(&vk.name, vk.flags & VALUE_COMP_NAME != 0, self.strict)
            .map_err(|e| corrupt("key value", Self::abs(off) + 20, e))?;
        let data = self.value_data(&vk, off)?;
        Ok(Value {
            name,
            data_type: vk.data_type,
            data,
            flags: vk.flags & !VALUE_COMP_NAME,
            spare: vk.spare,
        })
    }

    /// One key node with its values; returns the key, its subkeys' key node offsets and
    /// its subkeys list offset.
    fn key(&mut self, off: u32, parent: Option<u32>, depth: usize) -> Result<(Key, Vec<u32>, u32)> {
        let abs = Self::abs(off);
        if depth > MAX_DEPTH {
            return Err(corrupt(
                "key node",
                abs,
                format!("keys nest deeper than {MAX_DEPTH} levels"),
            ));
        }
        if !self.visited.insert(off) {
            return Err(corrupt(
                "key node",
                abs,
                "key node is referenced twice: the subkey lists form a loop",
            ));
        }
        self.charge(KEY_COST, "key node", off)?;
        let c = self.cell(off, "key node")?;
        let nk = KeyNode::parse(c, abs)?;
        if let Some(p) = parent {
            if self.strict && nk.parent != p {
                return Err(corrupt(
                    "key node",
                    abs + 16,
                    format!("parent field is {:#x}, expected {p:#x}", nk.parent),
                ));
            }
        }
        let name = decode_name(
            &nk.key_name,
            nk.flags & super::key_flags::COMP_NAME != 0,
            self.strict,
        )
        .map_err(|e| corrupt("key node", abs + 76, e))?;
        let mut key = Key::new(&name, nk.last_written_timestamp);
        key.flags = nk.flags & !super::key_flags::COMP_NAME;
        key.user_virt_debug = (nk.largest_subkey_name_length >> 16) as u16;
        key.spare = nk.spare;
        key.work_var = nk.work_var;

        if nk.class_name_offset != NO_CELL && nk.class_name_length > 0 {
            let r = self.cell(nk.class_name_offset, "class name").and_then(|c| {
                let n = nk.class_name_length as usize;
                match c.get(..n) {
                    Some(b) => Ok(b.to_vec()),
                    None if !self.strict => Ok(c.to_vec()),
                    None => Err(corrupt(
                        "class name",
                        Self::abs(nk.class_name_offset),
                        format!("class name length {n} exceeds the {}-byte cell", c.len()),
                    )),
                }
            });
            match r {
                Ok(b) => key.class_name = Some(b),
                Err(e) => self.warn_or_fail(e)?,
            }
        }

        if nk.key_security_offset != NO_CELL {
            match self.security(nk.key_security_offset) {
                Ok(sd) => key.security = Some(sd),
                Err(e) => self.warn_or_fail(e)?,
            }
        }

        if nk.number_of_key_values > 0 && nk.key_values_list_offset != NO_CELL {
            match self.value_offsets(&nk) {
                Ok(offsets) => {
                    for vo in offsets {
                        match self.value(vo) {
                            Ok(v) => key.values.push(v),
                            Err(e @ Error::Expansion { .. }) => return Err(e),
                            Err(e) => self.warn_or_fail(e)?,
                        }
                    }
                }
                Err(e) => self.warn_or_fail(e)?,
            }
        }

        let mut children = Vec::new();
        if nk.number_of_subkeys > 0 && nk.subkeys_list_offset != NO_CELL {
            match self.subkey_offsets(nk.subkeys_list_offset, &mut children, false) {
                Ok(()) => {
                    if children.len() != nk.number_of_subkeys as usize {
                        let e = corrupt(
                            "key node",
                            abs + 20,
                            format!(
                                "number of subkeys is {}, the subkeys list holds {}",
                                nk.number_of_subkeys,
                                children.len()
                            ),
                        );
                        self.warn_or_fail(e)?;
                    }
                }
                Err(e) => {
                    children.clear();
                    self.warn_or_fail(e)?;
                }
            }
        }
        Ok((key, children, nk.subkeys_list_offset))
    }

    /// Read the whole tree under the root key node at `root`, with an explicit stack (the
    /// deepest tree the format allows needs no more call stack than a flat one).
    fn tree(&mut self, root: u32) -> Result<Key> {
        // Keys in pre-order: (key, index of the parent, subkeys list offset).
        let mut arena: Vec<(Option<Key>, Option<usize>, u32)> = Vec::new();
        // (key node offset, parent key node offset, depth, index of the parent)
        let mut stack: Vec<(u32, Option<u32>, usize, Option<usize>)> = vec![(root, None, 0, None)];
        while let Some((off, parent_off, depth, parent)) = stack.pop() {
            match self.key(off, parent_off, depth) {
                Ok((key, children, list)) => {
                    let me = arena.len();
                    arena.push((Some(key), parent, list));
                    for &c in children.iter().rev() {
                        stack.push((c, Some(off), depth + 1, Some(me)));
                    }
                }
                Err(e) if parent.is_none() => return Err(e),
                Err(e @ Error::Expansion { .. }) => return Err(e),
                Err(e) => self.warn_or_fail(e)?,
            }
        }
        // Children follow their parent in pre-order: walking backwards, every key is
        // complete when it is reached and can be moved into its parent.
        for i in (0..arena.len()).rev() {
            let mut key = arena[i].0.take().expect("each key is moved once");
            key.subkeys.reverse();
            // Out-of-order or repeated names. Between ASCII names the comparison is exact
            // and a strict read fails; elsewhere our upper-casing may differ from Windows'
            // table for some scripts, so it is only a warning.
            let bad = key
                .subkeys
                .windows(2)
                .find(|w| !cmp_names(&w[0].name, &w[1].name).is_lt())
                .map(|w| (w[0].name.clone(), w[1].name.clone()));
            if let Some((a, b)) = bad {
                let e = corrupt(
                    "subkeys list",
                    Self::abs(arena[i].2),
                    format!("subkeys are not sorted by upper-cased name: '{a}' comes before '{b}'"),
                );
                if a.is_ascii() && b.is_ascii() {
                    self.warn_or_fail(e)?;
                } else {
                    self.warnings.push(e.to_string());
                }
                key.subkeys.sort_by(|a, b| cmp_names(&a.name, &b.name));
            }
            match arena[i].1 {
                Some(p) => arena[p]
                    .0
                    .as_mut()
                    .expect("parents come first")
                    .subkeys
                    .push(key),
                None => return Ok(key),
            }
        }
        unreachable!("the root is the first key of the arena")
    }

    fn value_offsets(&self, nk: &KeyNode) -> Result<Vec<u32>> {
        let list = self.cell(nk.key_values_list_offset, "key values list")?;
        let n = nk.number_of_key_values as usize;
        if n.checked_mul(4).is_none_or(|b| b > list.len()) {
            return Err(corrupt(
                "key values list",
                Self::abs(nk.key_values_list_offset),
                format!("{n} values do not fit the {}-byte list", list.len()),
            ));
        }
        Ok((0..n).map(|i| le32(list, i * 4)).collect())
    }
}

/// Parse a primary file whose base block is already known to be usable.
pub(crate) fn parse_primary(data: &[u8], strict: bool, mut warnings: Vec<String>) -> Result<Hive> {
    let base = BaseBlock::parse(data)?;
    if strict {
        base.validate(data)?;
    }
    let declared_end = BASE_BLOCK_SIZE as u64 + base.hive_bins_data_size as u64;
    if declared_end > data.len() as u64 {
        let e = corrupt(
            "base block",
            40,
            format!("hive bins data size {:#x} needs a file of {declared_end:#x} bytes, the file has {:#x}; it is truncated", base.hive_bins_data_size, data.len()),
        );
        if strict {
            return Err(e);
        }
        warnings.push(e.to_string());
    }
    let bins_end = declared_end.min(data.len() as u64) as usize;

    let mut bins = Vec::new();
    let mut rel: u32 = 0;
    while (BASE_BLOCK_SIZE + rel as usize) < bins_end {
        let abs = BASE_BLOCK_SIZE + rel as usize;
        let r = HiveBin::parse(data, abs, rel).and_then(|b| {
            let end = rel as u64 + b.size as u64;
            if BASE_BLOCK_SIZE as u64 + end > bins_end as u64 {
                Err(corrupt(
                    "hive bin",
                    abs as u64 + 8,
                    format!(
                        "bin of {:#x} bytes runs past the hive bins data end at {bins_end:#x}",
                        b.size
                    ),
                ))
            } else {
                Ok(end as u32)
            }
        });
        match r {
            Ok(end) => {
                bins.push((rel, end));
                rel = end;
            }
            Err(e) if strict => return Err(e),
            Err(e) => {
                warnings.push(e.to_string());
                break;
            }
        }
    }
    let budget = (data.len() as u64)
        .saturating_mul(BUDGET_PER_INPUT_BYTE)
        .saturating_add(BUDGET_SLACK);
    let mut r = Reader {
        data,
        bins_end,
        bins,
        strict,
        minor: base.minor_version,
        budget,
        warnings,
        visited: HashSet::new(),
        security: HashMap::new(),
    };
    let root = r.tree(base.root_cell_offset)?;
    Ok(Hive {
        base_block: base,
        root,
        warnings: r.warnings,
    })
}

impl Hive {
    /// Parse a hive strictly; a dirty hive is refused (use [`Hive::parse_with`] and logs).
    pub fn parse(data: &[u8]) -> Result<Hive> {
        Self::parse_with(data, &ParseOptions::default())
    }

    /// Parse with options: strict or lenient, and transaction logs for a dirty hive.
    pub fn parse_with(data: &[u8], opts: &ParseOptions) -> Result<Hive> {
        let base = BaseBlock::parse(data)?;
        let checksum_ok = BaseBlock::checksum_ok(data);
        let dirty = !checksum_ok || base.primary_sequence_number != base.secondary_sequence_number;
        if dirty && !opts.logs.is_empty() {
            let rec = super::log::recover(data, &opts.logs)?;
            let mut warnings = Vec::new();
            if rec.first_sequence != rec.expected_sequence {
                warnings.push(format!(
                    "transaction logs start at sequence number {}, the hive expected {}; \
                     applied entries {} to {}",
                    rec.first_sequence,
                    rec.expected_sequence,
                    rec.first_sequence,
                    rec.last_sequence
                ));
            }
            return parse_primary(&rec.data, opts.validate, warnings);
        }
        if dirty && checksum_ok && opts.validate {
            return Err(Error::Dirty {
                primary: base.primary_sequence_number,
                secondary: base.secondary_sequence_number,
            });
        }
        let mut warnings = Vec::new();
        if dirty && !opts.validate {
            warnings.push("hive is dirty and was read without its transaction logs; recent changes may be missing".to_string());
        }
        parse_primary(data, opts.validate, warnings)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{BaseBlock, ValueData};
    use super::*;

    /// A hive assembled byte by byte: one bin, a root key node with one inline DWORD
    /// value named "v" (8-bit name), an allocated cell per record, a free tail cell.
    fn hand_built() -> Vec<u8> {
        let mut bins = vec![0u8; 4096];
        bins[0..4].copy_from_slice(b"hbin");
        bins[8..12].copy_from_slice(&4096u32.to_le_bytes());
        let mut cell = |at: usize, data: &[u8]| {
            let size = (data.len() + 4 + 7) & !7;
            bins[at..at + 4].copy_from_slice(&(-(size as i32)).to_le_bytes());
            bins[at + 4..at + 4 + data.len()].copy_from_slice(data);
            at + size
        };
        let nk = KeyNode {
            flags: 0x2c,
            last_written_timestamp: 42,
            parent: NO_CELL,
            number_of_key_values: 1,
            key_values_list_offset: 0x80,
            subkeys_list_offset: NO_CELL,
            volatile_subkeys_list_offset: NO_CELL,
            key_security_offset: NO_CELL,
            class_name_offset: NO_CELL,
            key_name: b"ROOT".to_vec(),
            ..Default::default()
        };
        let end = cell(0x20, &nk.to_bytes());
        assert!(end <= 0x80);
        let end = cell(0x80, &0x88u32.to_le_bytes());
        assert_eq!(end, 0x88);
        let vk = KeyValue {
            data_size: DATA_INLINE | 4,
            data_offset: 7,
            data_type: 4,
            flags: 1,
            spare: 0,
            name: b"v".to_vec(),
        };
        let end = cell(0x88, &vk.to_bytes());
        bins[end..end + 4].copy_from_slice(&((4096 - end) as i32).to_le_bytes());
        let mut bb = BaseBlock::new(42);
        bb.hive_bins_data_size = 4096;
        let mut file = bb.to_bytes();
        file.extend(bins);
        file
    }

    #[test]
    fn reads_hand_built_hive() {
        let h = Hive::parse(&hand_built()).unwrap();
        assert_eq!(h.root.name, "ROOT");
        assert_eq!(h.root.last_written, 42);
        assert_eq!(h.root.flags, 0x0c, "KEY_COMP_NAME is not kept in the model");
        assert_eq!(h.root.values[0].name, "v");
        assert_eq!(h.root.values[0].decode(), ValueData::Dword(7));
        assert!(h.root.security.is_none() && h.warnings.is_empty());
    }

    #[test]
    fn strict_and_lenient_disagree_on_damage() {
        let mut b = hand_built();
        // The value's cell size made positive: a free cell where an allocated one belongs.
        let at = 4096 + 0x88;
        let size = -i32::from_le_bytes(b[at..at + 4].try_into().unwrap());
        b[at..at + 4].copy_from_slice(&size.to_le_bytes());
        let e = Hive::parse(&b).unwrap_err().to_string();
        assert!(e.contains("free") && e.contains("0x1088"), "{e}");
        let h = Hive::parse_with(
            &b,
            &ParseOptions {
                validate: false,
                logs: Vec::new(),
            },
        )
        .unwrap();
        assert_eq!(h.root.values.len(), 1);
        // A value list pointing outside the data: strict error, lenient skips the values.
        let mut b = hand_built();
        let list = 4096 + 0x20 + 4 + 40;
        b[list..list + 4].copy_from_slice(&0x10_0000u32.to_le_bytes());
        assert!(Hive::parse(&b).unwrap_err().to_string().contains("outside"));
        let h = Hive::parse_with(
            &b,
            &ParseOptions {
                validate: false,
                logs: Vec::new(),
            },
        )
        .unwrap();
        assert!(h.root.values.is_empty() && h.warnings.len() == 1);
    }
}
