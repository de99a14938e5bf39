//! SDDL text to a self-relative binary SECURITY_DESCRIPTOR.
//!
//! Sources: MS-DTYP §2.5.1 (Security Descriptor Description Language: the `O:`, `G:`, `D:`
//! and `S:` parts, ACL flags `P`/`AI`/`AR`, ACE strings `type;flags;rights;guid;guid;sid`,
//! SID aliases and access-right letters), §2.4.2 (SID binary form), §2.4.4.1 (ACE_HEADER,
//! AceType and AceFlags values), §2.4.5 (ACL header), §2.4.6 (SECURITY_DESCRIPTOR, the
//! control bits and the self-relative form) and §2.4.3 (ACCESS_MASK generic and standard
//! bits). File and key right letters (FA FR FW FX, KA KR KW KX) are the combined masks the
//! SDDL section lists.
//!
//! Layout written: the 20-byte header, then SACL, DACL, owner SID and group SID, the order
//! Windows' self-relative descriptors use (the same order as the descriptors in the real
//! hives). `TI` (NT SERVICE\TrustedInstaller, facts-cbs.md §6.2) is accepted as an alias
//! because the servicing tables use it as shorthand; Windows itself spells the SID out.
//! Object ACEs (with GUIDs), conditional ACEs and resource attributes are refused: component
//! manifests do not use them.

/// Longest SDDL string accepted: manifest descriptors are a few hundred characters, and
/// the binary form must fit the 64 KiB NTFS/registry descriptor limit anyway.
pub const MAX_SDDL_CHARS: usize = 16 * 1024;
/// Most sub-authorities a SID may have (MS-DTYP §2.4.2: SubAuthorityCount ≤ 15).
pub const MAX_SUB_AUTHORITIES: usize = 15;
/// Most ACEs in one ACL: AceCount is a u16 and AclSize must fit a u16.
pub const MAX_ACES: usize = 1024;

/// SE_SELF_RELATIVE and the other SECURITY_DESCRIPTOR control bits (MS-DTYP §2.4.6).
pub mod control {
    pub const DACL_PRESENT: u16 = 0x0004;
    pub const SACL_PRESENT: u16 = 0x0010;
    pub const DACL_AUTO_INHERIT_REQ: u16 = 0x0100;
    pub const SACL_AUTO_INHERIT_REQ: u16 = 0x0200;
    pub const DACL_AUTO_INHERITED: u16 = 0x0400;
    pub const SACL_AUTO_INHERITED: u16 = 0x0800;
    pub const DACL_PROTECTED: u16 = 0x1000;
    pub const SACL_PROTECTED: u16 = 0x2000;
    pub const SELF_RELATIVE: u16 = 0x8000;
}

/// ACL_REVISION: ACLs without object ACEs (MS-DTYP §2.4.5).
const ACL_REVISION: u8 = 2;
const SD_HEADER_LEN: usize = 20;

/// Errors parsing SDDL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("SDDL {sddl:?}: at character {pos}: {msg}; fix the security descriptor string")]
    Syntax {
        sddl: String,
        pos: usize,
        msg: String,
    },
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// SID string aliases (MS-DTYP §2.5.1.1, "SID strings"), plus `TI`.
const ALIASES: &[(&str, &str)] = &[
    ("AA", "S-1-5-32-579"),
    ("AC", "S-1-15-2-1"),
    ("AN", "S-1-5-7"),
    ("AO", "S-1-5-32-548"),
    ("AS", "S-1-18-1"),
    ("AU", "S-1-5-11"),
    ("BA", "S-1-5-32-544"),
    ("BG", "S-1-5-32-546"),
    ("BO", "S-1-5-32-551"),
    ("BU", "S-1-5-32-545"),
    ("CG", "S-1-3-1"),
    ("CO", "S-1-3-0"),
    ("CY", "S-1-5-32-569"),
    ("ED", "S-1-5-9"),
    ("ER", "S-1-5-32-573"),
    ("HA", "S-1-5-32-578"),
    ("HI", "S-1-16-12288"),
    ("IS", "S-1-5-32-568"),
    ("IU", "S-1-5-4"),
    ("LS", "S-1-5-19"),
    ("LU", "S-1-5-32-559"),
    ("LW", "S-1-16-4096"),
    ("ME", "S-1-16-8192"),
    ("MP", "S-1-16-8448"),
    ("MU", "S-1-5-32-558"),
    ("NO", "S-1-5-32-556"),
    ("NS", "S-1-5-20"),
    ("NU", "S-1-5-2"),
    ("OW", "S-1-3-4"),
    ("PS", "S-1-5-10"),
    ("PU", "S-1-5-32-547"),
    ("RC", "S-1-5-12"),
    ("RD", "S-1-5-32-555"),
    ("RE", "S-1-5-32-552"),
    ("RM", "S-1-5-32-580"),
    ("RU", "S-1-5-32-554"),
    ("SI", "S-1-16-16384"),
    ("SO", "S-1-5-32-549"),
    ("SS", "S-1-18-2"),
    ("SU", "S-1-5-6"),
    ("SY", "S-1-5-18"),
    (
        "TI",
        "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464",
    ),
    ("WD", "S-1-1-0"),
    ("WR", "S-1-5-33"),
];

/// Access-right letters (MS-DTYP §2.5.1.1 "ace_rights", §2.4.3).
const RIGHTS: &[(&str, u32)] = &[
    ("GA", 0x1000_0000),
    ("GX", 0x2000_0000),
    ("GW", 0x4000_0000),
    ("GR", 0x8000_0000),
    ("SD", 0x0001_0000),
    ("RC", 0x0002_0000),
    ("WD", 0x0004_0000),
    ("WO", 0x0008_0000),
    ("CC", 0x0000_0001),
    ("DC", 0x0000_0002),
    ("LC", 0x0000_0004),
    ("SW", 0x0000_0008),
    ("RP", 0x0000_0010),
    ("WP", 0x0000_0020),
    ("DT", 0x0000_0040),
    ("LO", 0x0000_0080),
    ("CR", 0x0000_0100),
    ("FA", 0x001F_01FF),
    ("FR", 0x0012_0089),
    ("FW", 0x0012_0116),
    ("FX", 0x0012_00A0),
    ("KA", 0x000F_003F),
    ("KR", 0x0002_0019),
    ("KW", 0x0002_0006),
    ("KX", 0x0002_0019),
    ("NR", 0x0000_0002),
    ("NW", 0x0000_0001),
    ("NX", 0x0000_0004),
];

/// ACE type strings and AceType values (MS-DTYP §2.4.4.1).
const ACE_TYPES: &[(&str, u8)] = &[
    ("A", 0x00),
    ("D", 0x01),
    ("AU", 0x02),
    ("AL", 0x03),
    ("ML", 0x11),
    ("SP", 0x13),
];

/// ACE flag strings and AceFlags bits (MS-DTYP §2.4.4.1).
const ACE_FLAGS: &[(&str, u8)] = &[
    ("OI", 0x01),
    ("CI", 0x02),
    ("NP", 0x04),
    ("IO", 0x08),
    ("ID", 0x10),
    ("SA", 0x40),
    ("FA", 0x80),
];

struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn err(&self, pos: usize, msg: impl Into<String>) -> Error {
        Error::Syntax {
            sddl: self.s.to_string(),
            pos,
            msg: msg.into(),
        }
    }

    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    /// The SID at the current position: an alias of two letters or `S-1-…`.
    fn sid(&mut self, end_chars: &[char]) -> Result<Vec<u8>, Error> {
        let start = self.pos;
        let r = self.rest();
        let len = if r.starts_with("S-") || r.starts_with("s-") {
            2 + r[2..]
                .find(|c: char| !(c.is_ascii_digit() || c == '-'))
                .unwrap_or(r.len() - 2)
        } else {
            r.char_indices().nth(2).map(|(i, _)| i).unwrap_or(r.len())
        };
        let text = &r[..len];
        self.pos += len;
        if let Some(c) = self.rest().chars().next() {
            if !end_chars.contains(&c) && !is_section_start(self.rest()) {
                return Err(self.err(self.pos, format!("unexpected {c:?} after SID {text:?}")));
            }
        }
        sid_bytes(text).map_err(|m| self.err(start, m))
    }
}

fn is_section_start(r: &str) -> bool {
    let b = r.as_bytes();
    b.len() >= 2 && matches!(b[0], b'O' | b'G' | b'D' | b'S') && b[1] == b':'
}

/// Binary SID (MS-DTYP §2.4.2) from `S-1-<authority>-<sub>…` or a two-letter alias.
pub fn sid_bytes(text: &str) -> Result<Vec<u8>, String> {
    let full = if text.len() == 2 {
        ALIASES
            .iter()
            .find(|(a, _)| a.eq_ignore_ascii_case(text))
            .map(|(_, s)| *s)
            .ok_or_else(|| format!("unknown SID alias {text:?}"))?
    } else {
        text
    };
    let mut parts = full.split('-');
    let s = parts.next().unwrap_or("");
    if !s.eq_ignore_ascii_case("S") {
        return Err(format!("{text:?} is neither a SID alias nor an S-1-… SID"));
    }
    if parts.next() != Some("1") {
        return Err(format!("SID {text:?} does not have revision 1"));
    }
    let auth: u64 = parts
        .next()
        .and_then(|a| a.parse().ok())
        .filter(|a| *a < (1u64 << 48))
        .ok_or_else(|| format!("SID {text:?}: identifier authority is not a 48-bit number"))?;
    let mut subs = Vec::new();
    for p in parts {
        let v: u32 = p
            .parse()
            .map_err(|_| format!("SID {text:?}: sub-authority {p:?} is not a 32-bit number"))?;
        subs.push(v);
    }
    if subs.len() > MAX_SUB_AUTHORITIES {
        return Err(format!(
            "SID {text:?} has {} sub-authorities, more than {MAX_SUB_AUTHORITIES}",
            subs.len()
        ));
    }
    let mut out = vec![1u8, subs.len() as u8];
    out.extend_from_slice(&auth.to_be_bytes()[2..]);
    for v in subs {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}

fn parse_rights(p: &Parser, text: &str, start: usize) -> Result<u32, Error> {
    if let Some(h) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        return u32::from_str_radix(h, 16).map_err(|_| {
            p.err(
                start,
                format!("rights {text:?} are not a 32-bit hex number"),
            )
        });
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map_err(|_| p.err(start, format!("rights {text:?} are not a 32-bit number")));
    }
    if !text.len().is_multiple_of(2) {
        return Err(p.err(start, format!("rights {text:?} are not two-letter codes")));
    }
    let mut mask = 0u32;
    for i in (0..text.len()).step_by(2) {
        let code = text.get(i..i + 2).unwrap_or("");
        let v = RIGHTS
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| *v)
            .ok_or_else(|| p.err(start + i, format!("unknown access right {code:?}")))?;
        mask |= v;
    }
    Ok(mask)
}

/// One ACE string (without the parentheses) to bytes; `start` is its position.
fn parse_ace(p: &Parser, body: &str, start: usize) -> Result<Vec<u8>, Error> {
    let fields: Vec<&str> = body.split(';').collect();
    if fields.len() != 6 {
        return Err(p.err(
            start,
            format!(
                "an ACE has 6 fields separated by ';', this one has {}",
                fields.len()
            ),
        ));
    }
    let mut at = start;
    let offsets: Vec<usize> = fields
        .iter()
        .map(|f| {
            let o = at;
            at += f.len() + 1;
            o
        })
        .collect();
    let ace_type = ACE_TYPES
        .iter()
        .find(|(t, _)| *t == fields[0])
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            p.err(
                offsets[0],
                format!(
                    "unsupported ACE type {:?} (expected A, D, AU, AL, ML or SP)",
                    fields[0]
                ),
            )
        })?;
    let fl = fields[1];
    if !fl.len().is_multiple_of(2) {
        return Err(p.err(
            offsets[1],
            format!("ACE flags {fl:?} are not two-letter codes"),
        ));
    }
    let mut flags = 0u8;
    for i in (0..fl.len()).step_by(2) {
        let code = fl.get(i..i + 2).unwrap_or("");
        flags |= ACE_FLAGS
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| *v)
            .ok_or_else(|| p.err(offsets[1] + i, format!("unknown ACE flag {code:?}")))?;
    }
    let mask = parse_rights(p, fields[2], offsets[2])?;
    for i in [3, 4] {
        if !fields[i].is_empty() {
            return Err(p.err(
                offsets[i],
                "object ACEs (with GUIDs) are not supported in component descriptors",
            ));
        }
    }
    let sid = sid_bytes(fields[5]).map_err(|m| p.err(offsets[5], m))?;
    let size = 8 + sid.len();
    let mut ace = vec![ace_type, flags];
    ace.extend_from_slice(&(size as u16).to_le_bytes());
    ace.extend_from_slice(&mask.to_le_bytes());
    ace.extend_from_slice(&sid);
    Ok(ace)
}

/// An ACL part after `D:` or `S:`: flags then `(ace)…`. Returns (control bits, ACL bytes or
/// None for `NO_ACCESS_CONTROL`).
fn parse_acl(p: &mut Parser, sacl: bool) -> Result<(u16, Option<Vec<u8>>), Error> {
    let mut ctl = 0u16;
    let mut null_acl = false;
    loop {
        let r = p.rest();
        if r.starts_with('(') || r.is_empty() || is_section_start(r) {
            break;
        }
        if let Some(n) = r.strip_prefix("NO_ACCESS_CONTROL") {
            null_acl = true;
            p.pos += r.len() - n.len();
        } else if r.starts_with("AI") {
            ctl |= if sacl {
                control::SACL_AUTO_INHERITED
            } else {
                control::DACL_AUTO_INHERITED
            };
            p.pos += 2;
        } else if r.starts_with("AR") {
            ctl |= if sacl {
                control::SACL_AUTO_INHERIT_REQ
            } else {
                control::DACL_AUTO_INHERIT_REQ
            };
            p.pos += 2;
        } else if r.starts_with('P') {
            ctl |= if sacl {
                control::SACL_PROTECTED
            } else {
                control::DACL_PROTECTED
            };
            p.pos += 1;
        } else {
            return Err(p.err(
                p.pos,
                "unknown ACL flag (expected P, AI, AR or NO_ACCESS_CONTROL) or '('",
            ));
        }
    }
    let mut aces = Vec::new();
    while p.rest().starts_with('(') {
        let start = p.pos + 1;
        let close = p
            .rest()
            .find(')')
            .ok_or_else(|| p.err(p.pos, "ACE without a closing ')'"))?;
        let body = &p.rest()[1..close];
        aces.push(parse_ace(p, body, start)?);
        p.pos += close + 1;
        if aces.len() > MAX_ACES {
            return Err(p.err(start, format!("more than {MAX_ACES} ACEs in one ACL")));
        }
    }
    if !(p.rest().is_empty() || is_section_start(p.rest())) {
        return Err(p.err(
            p.pos,
            "expected '(' starting an ACE or the next part (O:, G:, D:, S:)",
        ));
    }
    if null_acl {
        if !aces.is_empty() {
            return Err(p.err(p.pos, "NO_ACCESS_CONTROL with ACEs"));
        }
        return Ok((ctl, None));
    }
    let size: usize = 8 + aces.iter().map(Vec::len).sum::<usize>();
    if size > usize::from(u16::MAX) {
        return Err(p.err(p.pos, format!("the ACL is {size} bytes, above 65535")));
    }
    let mut acl = vec![ACL_REVISION, 0];
    acl.extend_from_slice(&(size as u16).to_le_bytes());
    acl.extend_from_slice(&(aces.len() as u16).to_le_bytes());
    acl.extend_from_slice(&[0, 0]);
    for a in aces {
        acl.extend(a);
    }
    Ok((ctl, Some(acl)))
}

/// Parse SDDL into a self-relative SECURITY_DESCRIPTOR.
pub fn parse(sddl: &str) -> Result<Vec<u8>, Error> {
    let mut p = Parser { s: sddl, pos: 0 };
    if sddl.len() > MAX_SDDL_CHARS {
        return Err(p.err(
            MAX_SDDL_CHARS,
            format!("longer than {MAX_SDDL_CHARS} characters"),
        ));
    }
    if let Some(i) = sddl.find(|c: char| !c.is_ascii() || c.is_ascii_whitespace()) {
        return Err(p.err(i, "whitespace or non-ASCII character"));
    }
    let mut owner = None;
    let mut group = None;
    let mut dacl: Option<(u16, Option<Vec<u8>>)> = None;
    let mut sacl: Option<(u16, Option<Vec<u8>>)> = None;
    while !p.rest().is_empty() {
        let at = p.pos;
        let r = p.rest();
        if !is_section_start(r) {
            return Err(p.err(at, "expected O:, G:, D: or S:"));
        }
        let tag = r.as_bytes()[0];
        p.pos += 2;
        let dup = match tag {
            b'O' => owner.replace(p.sid(&[])?).is_some(),
            b'G' => group.replace(p.sid(&[])?).is_some(),
            b'D' => dacl.replace(parse_acl(&mut p, false)?).is_some(),
            _ => sacl.replace(parse_acl(&mut p, true)?).is_some(),
        };
        if dup {
            return Err(p.err(at, format!("{}: given twice", tag as char)));
        }
    }
    let mut ctl = control::SELF_RELATIVE;
    let mut body = Vec::new();
    fn off(part: Option<&Vec<u8>>, body: &mut Vec<u8>) -> u32 {
        match part {
            Some(b) => {
                let o = (SD_HEADER_LEN + body.len()) as u32;
                body.extend_from_slice(b);
                o
            }
            None => 0,
        }
    }
    let mut sacl_off = 0;
    if let Some((c, acl)) = &sacl {
        ctl |= c | control::SACL_PRESENT;
        sacl_off = off(acl.as_ref(), &mut body);
    }
    let mut dacl_off = 0;
    if let Some((c, acl)) = &dacl {
        ctl |= c | control::DACL_PRESENT;
        dacl_off = off(acl.as_ref(), &mut body);
    }
    let owner_off = off(owner.as_ref(), &mut body);
    let group_off = off(group.as_ref(), &mut body);
    let mut sd = vec![1u8, 0];
    sd.extend_from_slice(&ctl.to_le_bytes());
    for o in [owner_off, group_off, sacl_off, dacl_off] {
        sd.extend_from_slice(&o.to_le_bytes());
    }
    sd.extend(body);
    Ok(sd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(auth: u8, subs: &[u32]) -> Vec<u8> {
        let mut v = vec![1, subs.len() as u8, 0, 0, 0, 0, 0, auth];
        for s in subs {
            v.extend_from_slice(&s.to_le_bytes());
        }
        v
    }

    /// The descriptor tests/common builds by hand: owner BA... here owner S-1-5-32-544,
    /// group S-1-5-32-544, DACL allowing 0x1F01FF (FA) to BU; bytes from MS-DTYP §2.4.6.
    #[test]
    fn known_descriptor_bytes() {
        let sd = parse("O:BAG:BAD:(A;;FA;;;BU)").unwrap();
        let mut want = vec![1u8, 0];
        want.extend_from_slice(&(0x8004u16).to_le_bytes());
        // DACL at 20: 8-byte header + one 24-byte ACE = 32; owner at 52, group at 68.
        for o in [52u32, 68, 0, 20] {
            want.extend_from_slice(&o.to_le_bytes());
        }
        want.extend_from_slice(&[2, 0, 32, 0, 1, 0, 0, 0]);
        want.extend_from_slice(&[0, 0, 24, 0]);
        want.extend_from_slice(&0x001F_01FFu32.to_le_bytes());
        want.extend(sid(5, &[32, 545]));
        want.extend(sid(5, &[32, 544]));
        want.extend(sid(5, &[32, 544]));
        assert_eq!(sd, want);
    }

    #[test]
    fn wrp_file_default_with_sacl_and_flags() {
        let ti = "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464";
        let text = format!(
            "O:{ti}G:{ti}D:P(A;;FA;;;{ti})(A;;GRGX;;;BA)(A;;GRGX;;;SY)(A;;GRGX;;;BU)\
             (A;;GRGX;;;S-1-15-2-1)S:(AU;FASA;0x000D0116;;;WD)"
        );
        let sd = parse(&text).unwrap();
        assert_eq!(sd, parse(&text.replace(ti, "TI")).unwrap());
        let ctl = u16::from_le_bytes([sd[2], sd[3]]);
        assert_eq!(ctl, 0x8000 | 0x1000 | 0x0004 | 0x0010);
        let off = |i: usize| u32::from_le_bytes(sd[4 + 4 * i..8 + 4 * i].try_into().unwrap());
        // SACL first, right after the header.
        assert_eq!(off(2), 20);
        let sacl_len = u16::from_le_bytes([sd[22], sd[23]]) as usize;
        assert_eq!(sacl_len, 8 + 8 + 12);
        // The audit ACE: type 2, flags SA|FA = 0xC0, mask 0xD0116, SID S-1-1-0.
        assert_eq!(&sd[28..32], &[2, 0xC0, 20, 0]);
        assert_eq!(&sd[32..36], &0x000D_0116u32.to_le_bytes());
        assert_eq!(&sd[36..48], &sid(1, &[0])[..]);
        assert_eq!(off(3) as usize, 20 + sacl_len);
        // DACL: five ACEs; GRGX = 0xA0000000.
        let d = off(3) as usize;
        assert_eq!(u16::from_le_bytes([sd[d + 4], sd[d + 5]]), 5);
        let ti_sid = sid(
            5,
            &[
                80, 956008885, 3418522649, 1831038044, 1853292631, 2271478464,
            ],
        );
        let first_ace_sid = &sd[d + 16..d + 16 + ti_sid.len()];
        assert_eq!(first_ace_sid, &ti_sid[..]);
        let second = d + 8 + 8 + ti_sid.len();
        assert_eq!(&sd[second + 4..second + 8], &0xA000_0000u32.to_le_bytes());
        assert_eq!(&sd[off(0) as usize..off(1) as usize], &ti_sid[..]);
        assert_eq!(sd.len(), off(1) as usize + ti_sid.len());
    }

    #[test]
    fn ace_flags_rights_and_acl_flags() {
        let sd = parse("D:PAI(A;OICIIONPID;0x1301bf;;;SY)").unwrap();
        let ctl = u16::from_le_bytes([sd[2], sd[3]]);
        assert_eq!(ctl, 0x8000 | 0x1000 | 0x0400 | 0x0004);
        assert_eq!(sd[20 + 8 + 1], 0x01 | 0x02 | 0x08 | 0x04 | 0x10);
        assert_eq!(&sd[32..36], &0x0013_01BFu32.to_le_bytes());
        let k = parse("D:(A;CI;KR;;;BU)(D;;KA;;;AN)").unwrap();
        assert_eq!(&k[32..36], &0x0002_0019u32.to_le_bytes());
        assert_eq!(k[20 + 8 + 24], 1, "D is ACCESS_DENIED");
        // An empty protected DACL is present with no ACEs; NO_ACCESS_CONTROL is a NULL DACL.
        let e = parse("D:P").unwrap();
        assert_eq!(&e[20..28], &[2, 0, 8, 0, 0, 0, 0, 0]);
        let n = parse("D:NO_ACCESS_CONTROL").unwrap();
        assert_eq!(n.len(), 20);
        assert_eq!(u16::from_le_bytes([n[2], n[3]]), 0x8004);
        // A decimal authority-5 SID and decimal rights.
        let s = parse("O:S-1-5-21-1-2-3-500D:(A;;16;;;S-1-5-21-1-2-3-500)").unwrap();
        assert_eq!(&s[32..36], &16u32.to_le_bytes());
    }

    #[test]
    fn malformed_sddl_errors_name_the_position() {
        for (bad, pos) in [
            ("O:XXG:BA", 2),
            ("D:(A;;FA;;;BU", 2),
            ("D:(A;;FQ;;;BU)", 6),
            ("D:(Z;;FA;;;BU)", 3),
            ("D:(A;ZZ;FA;;;BU)", 5),
            ("D:(A;;FA;;BU)", 3),
            ("D:(A;;FA;{x};;BU)", 9),
            ("Q:BA", 0),
            ("O:BAO:SY", 4),
            ("D:X(A;;FA;;;BU)", 2),
            ("O:S-1-5-x", 8),
            ("O:S-2-5", 2),
            ("D:(A;;0xZZ;;;BU)", 6),
            ("O:BA G:BA", 4),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("at character {pos}:")), "{bad}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
