//! The in-memory tree: keys with their values, easy to edit, written back by `write`.

use std::sync::Arc;

use super::names::{cmp_names, eq_names, utf16_len, utf16le};
use super::value_type::*;
use super::{BaseBlock, Error, Result, MAX_KEY_NAME_CHARS, MAX_VALUE_NAME_CHARS};

/// A hive: its base block fields and the root key.
#[derive(Debug, Clone, PartialEq)]
pub struct Hive {
    /// Base block fields kept verbatim on write (timestamp, version, file name, Windows 10
    /// transaction fields, sequence numbers). The writer recomputes sizes and offsets.
    pub base_block: BaseBlock,
    pub root: Key,
    /// Problems met while parsing: everything skipped with `validate: false`; in strict
    /// mode only doubts about the order of non-ASCII subkey names (see the reader).
    pub warnings: Vec<String>,
}

/// A registry key.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    /// Class name bytes as stored (usually UTF-16LE), `None` when absent.
    pub class_name: Option<Vec<u8>>,
    /// FILETIME (UTC) of the last write, as stored.
    pub last_written: u64,
    /// Key node flags as stored, without KEY_COMP_NAME (a storage detail the writer
    /// recomputes from the name). The writer also sets KEY_HIVE_ENTRY on the root only
    /// and keeps every other bit.
    pub flags: u16,
    /// Upper 16 bits of the "largest subkey name length" field: virtualization control
    /// flags, user (Wow64) flags and the debug byte (spec, "Key node").
    pub user_virt_debug: u16,
    /// The "Spare" field at offset 12 (access bits in recent Windows), kept verbatim.
    pub spare: u32,
    /// The "WorkVar" field at offset 68, kept verbatim.
    pub work_var: u32,
    /// Self-relative security descriptor, shared between keys that use the same one.
    pub security: Option<Arc<[u8]>>,
    /// Values in stored order.
    pub values: Vec<Value>,
    /// Subkeys, sorted by upper-cased name (the order the hive stores them in). Add them
    /// with [`Key::add_subkey`] to keep the order lookups rely on.
    pub subkeys: Vec<Key>,
}

/// A registry value: a name, a type number and raw data bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// Empty for the default value.
    pub name: String,
    pub data_type: u32,
    pub data: Vec<u8>,
    /// Key value flags except VALUE_COMP_NAME (recomputed), kept verbatim.
    pub flags: u16,
    /// The "Spare" field at offset 18, kept verbatim.
    pub spare: u16,
}

/// A typed view of value data. Unknown types and malformed data stay raw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueData {
    None(Vec<u8>),
    Sz(String),
    ExpandSz(String),
    Binary(Vec<u8>),
    Dword(u32),
    DwordBigEndian(u32),
    Link(String),
    MultiSz(Vec<String>),
    Qword(u64),
    /// REG_RESOURCE_LIST, REG_FULL_RESOURCE_DESCRIPTOR, REG_RESOURCE_REQUIREMENTS_LIST,
    /// any other type number, or data that does not fit its declared type.
    Raw {
        data_type: u32,
        data: Vec<u8>,
    },
}

fn utf16z(s: &str) -> Vec<u8> {
    let mut v = utf16le(s);
    v.extend_from_slice(&[0, 0]);
    v
}

fn from_utf16z(d: &[u8]) -> Option<String> {
    if !d.len().is_multiple_of(2) {
        return None;
    }
    let mut units: Vec<u16> = d
        .chunks_exact(2)
        .map(|p| u16::from_le_bytes([p[0], p[1]]))
        .collect();
    if units.last() == Some(&0) {
        units.pop();
    }
    if units.contains(&0) {
        return None;
    }
    String::from_utf16(&units).ok()
}

impl Value {
    /// A value of any type from raw bytes.
    pub fn new(name: &str, data_type: u32, data: Vec<u8>) -> Self {
        Value {
            name: name.to_string(),
            data_type,
            data,
            flags: 0,
            spare: 0,
        }
    }
    /// REG_SZ, stored as UTF-16LE with a terminating NUL.
    pub fn sz(name: &str, s: &str) -> Self {
        Self::new(name, REG_SZ, utf16z(s))
    }
    /// REG_EXPAND_SZ, stored as UTF-16LE with a terminating NUL.
    pub fn expand_sz(name: &str, s: &str) -> Self {
        Self::new(name, REG_EXPAND_SZ, utf16z(s))
    }
    /// REG_MULTI_SZ: each string NUL-terminated, then one more NUL.
    pub fn multi_sz(name: &str, items: &[&str]) -> Self {
        let mut d = Vec::new();
        for s in items {
            d.extend(utf16z(s));
        }
        d.extend_from_slice(&[0, 0]);
        Self::new(name, REG_MULTI_SZ, d)
    }
    /// REG_DWORD (little-endian).
    pub fn dword(name: &str, v: u32) -> Self {
        Self::new(name, REG_DWORD, v.to_le_bytes().to_vec())
    }
    /// REG_QWORD (little-endian).
    pub fn qword(name: &str, v: u64) -> Self {
        Self::new(name, REG_QWORD, v.to_le_bytes().to_vec())
    }
    /// REG_BINARY.
    pub fn binary(name: &str, d: &[u8]) -> Self {
        Self::new(name, REG_BINARY, d.to_vec())
    }

    /// Typed view of the data.
    pub fn decode(&self) -> ValueData {
        let d = &self.data;
        let raw = || ValueData::Raw {
            data_type: self.data_type,
            data: d.clone(),
        };
        match self.data_type {
            REG_NONE => ValueData::None(d.clone()),
            REG_SZ => from_utf16z(d).map(ValueData::Sz).unwrap_or_else(raw),
            REG_EXPAND_SZ => from_utf16z(d).map(ValueData::ExpandSz).unwrap_or_else(raw),
            REG_LINK => {
                // Symbolic link targets are stored without a terminator.
                let units: Vec<u16> = d
                    .chunks_exact(2)
                    .map(|p| u16::from_le_bytes([p[0], p[1]]))
                    .collect();
                match (d.len() % 2, String::from_utf16(&units)) {
                    (0, Ok(s)) => ValueData::Link(s),
                    _ => raw(),
                }
            }
            REG_BINARY => ValueData::Binary(d.clone()),
            REG_DWORD if d.len() == 4 => {
                ValueData::Dword(u32::from_le_bytes([d[0], d[1], d[2], d[3]]))
            }
            REG_DWORD_BIG_ENDIAN if d.len() == 4 => {
                ValueData::DwordBigEndian(u32::from_be_bytes([d[0], d[1], d[2], d[3]]))
            }
            REG_QWORD if d.len() == 8 => {
                let mut a = [0u8; 8];
                a.copy_from_slice(d);
                ValueData::Qword(u64::from_le_bytes(a))
            }
            REG_MULTI_SZ => {
                if !d.len().is_multiple_of(2) {
                    return raw();
                }
                let units: Vec<u16> = d
                    .chunks_exact(2)
                    .map(|p| u16::from_le_bytes([p[0], p[1]]))
                    .collect();
                let mut items = Vec::new();
                for part in units.split(|&u| u == 0) {
                    match String::from_utf16(part) {
                        Ok(s) => items.push(s),
                        Err(_) => return raw(),
                    }
                }
                // The list ends with an empty string before the final NUL(s).
                while items.last().is_some_and(|s| s.is_empty()) {
                    items.pop();
                }
                ValueData::MultiSz(items)
            }
            _ => raw(),
        }
    }
}

impl Key {
    /// A new key with no values or subkeys.
    pub fn new(name: &str, last_written: u64) -> Self {
        Key {
            name: name.to_string(),
            class_name: None,
            last_written,
            flags: 0,
            user_virt_debug: 0,
            spare: 0,
            work_var: 0,
            security: None,
            values: Vec::new(),
            subkeys: Vec::new(),
        }
    }

    /// Subkeys are kept sorted (the reader sorts lists a damaged hive left unsorted;
    /// [`Key::add_subkey`] inserts in order), so lookups are binary searches.
    fn find_index(&self, name: &str) -> Result<usize, usize> {
        self.subkeys.binary_search_by(|k| cmp_names(&k.name, name))
    }

    /// Direct subkey by name (case-insensitive).
    pub fn subkey(&self, name: &str) -> Option<&Key> {
        self.find_index(name).ok().map(|i| &self.subkeys[i])
    }

    /// Direct subkey by name (case-insensitive), mutable.
    pub fn subkey_mut(&mut self, name: &str) -> Option<&mut Key> {
        self.find_index(name)
            .ok()
            .map(move |i| &mut self.subkeys[i])
    }

    /// Insert a subkey at its sorted place. Fails if a subkey of that name exists.
    pub fn add_subkey(&mut self, key: Key) -> Result<&mut Key> {
        check_key_name(&key.name)?;
        match self.find_index(&key.name) {
            Ok(_) => Err(Error::Edit {
                path: key.name,
                detail: "a subkey of that name exists".into(),
            }),
            Err(pos) => {
                self.subkeys.insert(pos, key);
                Ok(&mut self.subkeys[pos])
            }
        }
    }

    /// Remove a direct subkey (and its subtree).
    pub fn remove_subkey(&mut self, name: &str) -> Option<Key> {
        self.find_index(name).ok().map(|i| self.subkeys.remove(i))
    }

    /// Value by name (case-insensitive; "" is the default value).
    pub fn value(&self, name: &str) -> Option<&Value> {
        self.values.iter().find(|v| eq_names(&v.name, name))
    }

    /// Set a value: replaces the data and type of an existing value in place (keeping
    /// its position and stored name), or appends a new one.
    pub fn set_value(&mut self, value: Value) -> Result<()> {
        if utf16_len(&value.name) > MAX_VALUE_NAME_CHARS {
            return Err(Error::Edit {
                path: value.name.clone(),
                detail: format!("value name longer than {MAX_VALUE_NAME_CHARS} characters"),
            });
        }
        match self
            .values
            .iter_mut()
            .find(|v| eq_names(&v.name, &value.name))
        {
            Some(v) => {
                v.data_type = value.data_type;
                v.data = value.data;
            }
            None => self.values.push(value),
        }
        Ok(())
    }

    /// Delete a value; true if it existed.
    pub fn delete_value(&mut self, name: &str) -> bool {
        let before = self.values.len();
        self.values.retain(|v| !eq_names(&v.name, name));
        before != self.values.len()
    }

    /// Number of keys in this subtree, this key included.
    pub fn count_keys(&self) -> usize {
        1 + self.subkeys.iter().map(Key::count_keys).sum::<usize>()
    }
}

fn check_key_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('\\') || utf16_len(name) > MAX_KEY_NAME_CHARS {
        return Err(Error::Edit {
            path: name.to_string(),
            detail: format!("a key name must be 1 to {MAX_KEY_NAME_CHARS} characters without '\\'"),
        });
    }
    Ok(())
}

/// Split a key path ("A\\B", "\\A\\B", "" or "\\" for the root) into components.
pub(crate) fn split_path(path: &str) -> Vec<&str> {
    path.split('\\').filter(|c| !c.is_empty()).collect()
}

impl Hive {
    /// An empty hive: a root key named `root_name` with the default security descriptor
    /// (see [`super::default_security_descriptor`]); `timestamp` (FILETIME) is used for
    /// the root key and the base block.
    pub fn new_empty(root_name: &str, timestamp: u64) -> Self {
        let mut root = Key::new(root_name, timestamp);
        root.flags = super::key_flags::HIVE_ENTRY | super::key_flags::NO_DELETE;
        root.security = Some(Arc::from(super::default_security_descriptor()));
        Hive {
            base_block: BaseBlock::new(timestamp),
            root,
            warnings: Vec::new(),
        }
    }

    /// Key at a path relative to the root (case-insensitive; "" is the root).
    pub fn key(&self, path: &str) -> Option<&Key> {
        let mut k = &self.root;
        for c in split_path(path) {
            k = k.subkey(c)?;
        }
        Some(k)
    }

    /// Key at a path, mutable.
    pub fn key_mut(&mut self, path: &str) -> Option<&mut Key> {
        let mut k = &mut self.root;
        for c in split_path(path) {
            k = k.subkey_mut(c)?;
        }
        Some(k)
    }

    fn key_mut_or_err(&mut self, path: &str) -> Result<&mut Key> {
        self.key_mut(path)
            .ok_or_else(|| Error::NoSuchKey(path.to_string()))
    }

    /// Create a key and any missing parents. New keys get `timestamp` and their
    /// parent's security descriptor. Returns the key (existing or new).
    pub fn create_key(&mut self, path: &str, timestamp: u64) -> Result<&mut Key> {
        let mut k = &mut self.root;
        for c in split_path(path) {
            if k.subkey(c).is_none() {
                let mut nk = Key::new(c, timestamp);
                nk.security = k.security.clone();
                k.add_subkey(nk)?;
            }
            k = k.subkey_mut(c).expect("just ensured");
        }
        Ok(k)
    }

    /// Delete a key and its subtree. The root cannot be deleted.
    pub fn delete_key(&mut self, path: &str) -> Result<Key> {
        let comps = split_path(path);
        let Some((last, parent)) = comps.split_last() else {
            return Err(Error::Edit {
                path: path.into(),
                detail: "the root key cannot be deleted".into(),
            });
        };
        let parent_path = parent.join("\\");
        self.key_mut_or_err(&parent_path)?
            .remove_subkey(last)
            .ok_or_else(|| Error::NoSuchKey(path.to_string()))
    }

    /// Rename a key in place (the root too). Fails if a sibling has the new name.
    pub fn rename_key(&mut self, path: &str, new_name: &str) -> Result<()> {
        check_key_name(new_name)?;
        let comps = split_path(path);
        let Some((last, parent)) = comps.split_last() else {
            self.root.name = new_name.to_string();
            return Ok(());
        };
        let p = self.key_mut_or_err(&parent.join("\\"))?;
        let mut k = p
            .remove_subkey(last)
            .ok_or_else(|| Error::NoSuchKey(path.to_string()))?;
        if p.subkey(new_name).is_some() {
            let err = Error::Edit {
                path: path.into(),
                detail: format!("a sibling named '{new_name}' exists"),
            };
            p.add_subkey(k)?;
            return Err(err);
        }
        k.name = new_name.to_string();
        p.add_subkey(k)?;
        Ok(())
    }

    /// Set a value on an existing key.
    pub fn set_value(&mut self, path: &str, value: Value) -> Result<()> {
        self.key_mut_or_err(path)?.set_value(value)
    }

    /// Delete a value; Ok(true) if it existed.
    pub fn delete_value(&mut self, path: &str, name: &str) -> Result<bool> {
        Ok(self.key_mut_or_err(path)?.delete_value(name))
    }

    /// Set a key's self-relative security descriptor.
    pub fn set_security(&mut self, path: &str, descriptor: Vec<u8>) -> Result<()> {
        if descriptor.len() < 20 || descriptor[0] != 1 {
            return Err(Error::Edit {
                path: path.into(),
                detail: "a security descriptor is at least 20 bytes and starts with revision 1"
                    .into(),
            });
        }
        self.key_mut_or_err(path)?.security = Some(Arc::from(descriptor));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_tree() {
        let mut h = Hive::new_empty("ROOT", 7);
        h.create_key("b\\c", 9).unwrap();
        h.create_key("A", 9).unwrap();
        assert_eq!(
            h.root
                .subkeys
                .iter()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>(),
            ["A", "b"]
        );
        assert!(h.key("B\\C").is_some());
        assert_eq!(h.key("b\\c").unwrap().security, h.root.security);
        h.set_value("b", Value::dword("x", 1)).unwrap();
        h.set_value("b", Value::sz("X", "s")).unwrap();
        assert_eq!(h.key("b").unwrap().values.len(), 1);
        assert_eq!(h.key("b").unwrap().values[0].name, "x");
        assert_eq!(
            h.key("b").unwrap().values[0].decode(),
            ValueData::Sz("s".into())
        );
        h.rename_key("b", "Z").unwrap();
        assert!(h.key("z\\c").is_some());
        assert!(h.rename_key("Z", "a").is_err());
        assert!(h.key("Z").is_some());
        h.delete_key("z").unwrap();
        assert!(h.key("z").is_none());
        assert!(h.delete_key("").is_err());
        assert!(h.create_key("bad\u{0}", 1).is_ok());
        assert!(h.set_security("A", vec![0; 4]).is_err());
    }

    #[test]
    fn typed_views() {
        assert_eq!(
            Value::multi_sz("m", &["a", "bc"]).decode(),
            ValueData::MultiSz(vec!["a".into(), "bc".into()])
        );
        assert_eq!(Value::qword("q", 5).decode(), ValueData::Qword(5));
        assert_eq!(
            Value::new("d", REG_DWORD, vec![1, 2]).decode(),
            ValueData::Raw {
                data_type: 4,
                data: vec![1, 2]
            }
        );
        assert_eq!(
            Value::new("b", 5, vec![0, 0, 0, 1]).decode(),
            ValueData::DwordBigEndian(1)
        );
        assert_eq!(
            Value::new("l", 6, utf16le("\\x")).decode(),
            ValueData::Link("\\x".into())
        );
    }
}
