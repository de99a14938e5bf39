//! The metadata files: records 0–15 and 24–26, the root directory and $Secure's streams.
//!
//! Facts: docs/facts-ntfs.md §2 (reserved records, $Secure, $Extend children, $UpCase).

use super::index;
use super::meta;
use super::record::{self, Attr, Body, NonResident, Run};
use super::record::{
    AT_BITMAP, AT_DATA, AT_FILE_NAME, AT_STANDARD_INFORMATION, AT_VOLUME_INFORMATION,
    AT_VOLUME_NAME, MFT_RECORD_IN_USE, MFT_RECORD_IS_4, MFT_RECORD_IS_DIRECTORY,
    MFT_RECORD_IS_VIEW_INDEX,
};
use super::Error;
use crate::tree::{upcase, NameSpace, Tree, ATTR_DIRECTORY};

use super::plan::*;

/// Names of the metadata files in the root.
pub(super) const SYSTEM_NAMES: [&str; 11] = [
    "$MFT", "$MFTMirr", "$LogFile", "$Volume", "$AttrDef", "$Bitmap", "$Boot", "$BadClus",
    "$Secure", "$UpCase", "$Extend",
];

impl Plan {
    pub(super) fn sys_times(&self) -> [u64; 4] {
        [self.opts.time; 4]
    }

    /// A metadata file's record: SI, FN (in `parent`), the given attributes.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn sys_record(
        &mut self,
        num: u64,
        name: &str,
        parent: u64,
        secid: u32,
        fa: u32,
        flags: u16,
        mut attrs: Vec<Attr>,
        dup: (u64, u64),
    ) -> Result<Vec<u8>, Error> {
        let t = self.sys_times();
        let is_dir = flags & MFT_RECORD_IS_DIRECTORY != 0;
        let fn_fa = if is_dir { fa | FA_DUP_DIRECTORY } else { fa };
        let fnv = fn_value(
            parent,
            t,
            dup.0,
            dup.1,
            fn_fa,
            0,
            &utf16(name),
            NameSpace::Win32AndDos as u8,
        );
        attrs.push(Attr::resident(
            AT_STANDARD_INFORMATION,
            "",
            si_value(t, fa, secid),
        ));
        attrs.push(Attr::resident(AT_FILE_NAME, "", fnv.clone()));
        let seq = if num == 0 { 1 } else { num as u16 };
        let mut no_ext = u64::MAX;
        self.pack(num, seq, flags, 1, attrs, &mut no_ext, &|| name.to_string())?;
        if no_ext != u64::MAX {
            return Err(Error::Unsupported {
                path: name.into(),
                why: "metadata file overflows its MFT record".into(),
            });
        }
        Ok(fnv)
    }

    pub(super) fn placed_dup(&self, a: &Attr) -> (u64, u64) {
        match &a.body {
            Body::NonResident(nr) => (nr.vcns() * self.cs, nr.data_size),
            Body::Resident { value, .. } => ((value.len() as u64 + 7) & !7, value.len() as u64),
        }
    }

    pub(super) fn system_records(
        &mut self,
        tree: &Tree,
        _dups: &[Dup],
        mut objids: Vec<(Vec<u8>, Vec<u8>)>,
        mut reparses: Vec<Vec<u8>>,
    ) -> Result<(), Error> {
        let root_ref = mref(5, 5);
        let ext_ref = mref(11, 11);
        let t = self.sys_times();
        let mut root_list: Vec<(Vec<u16>, Vec<u8>)> = std::mem::take(&mut self.root_entries);
        let mut add_root = |name: &str, num: u64, fnv: Vec<u8>| {
            let seq = if num == 0 { 1 } else { num as u16 };
            root_list.push((utf16(name), index::file_name_entry(mref(num, seq), &fnv)));
        };
        let hs = FA_HIDDEN_SYSTEM;
        let room = record::record_room(self.rs);

        // 1 $MFTMirr: a byte copy of the first records (ntfs-3g compares max(4, cluster/record)).
        let mirr_records = (self.cs as usize / self.rs).max(4) as u64;
        let a = self.placed(AT_DATA, "", mirr_records * self.rs as u64, Fill::MftMirr);
        let d = self.placed_dup(&a);
        let f = self.sys_record(
            1,
            "$MFTMirr",
            root_ref,
            SECID_SYSTEM,
            hs,
            MFT_RECORD_IN_USE,
            vec![a],
            d,
        )?;
        add_root("$MFTMirr", 1, f);
        // 2 $LogFile, all 0xFF: empty and clean to ntfs-3g and ntfs3 (facts §2.3).
        let a = self.placed(
            AT_DATA,
            "",
            meta::logfile_size(self.size, self.cs),
            Fill::Repeat(0xFF),
        );
        let d = self.placed_dup(&a);
        let f = self.sys_record(
            2,
            "$LogFile",
            root_ref,
            SECID_SYSTEM,
            hs,
            MFT_RECORD_IN_USE,
            vec![a],
            d,
        )?;
        add_root("$LogFile", 2, f);
        // 3 $Volume.
        let label: Vec<u8> = self
            .opts
            .label
            .encode_utf16()
            .flat_map(|c| c.to_le_bytes())
            .collect();
        let mut vi = vec![0u8; 12];
        vi[8] = 3;
        vi[9] = 1;
        let attrs = vec![
            Attr::resident(AT_VOLUME_NAME, "", label),
            Attr::resident(AT_VOLUME_INFORMATION, "", vi),
            Attr::resident(AT_DATA, "", Vec::new()),
        ];
        let f = self.sys_record(
            3,
            "$Volume",
            root_ref,
            SECID_SYSTEM_RW,
            hs,
            MFT_RECORD_IN_USE,
            attrs,
            (0, 0),
        )?;
        add_root("$Volume", 3, f);
        // 4 $AttrDef.
        let ad = meta::attrdef();
        let a = self.placed(AT_DATA, "", ad.len() as u64, Fill::Bytes(ad));
        let d = self.placed_dup(&a);
        let f = self.sys_record(
            4,
            "$AttrDef",
            root_ref,
            SECID_SYSTEM,
            hs,
            MFT_RECORD_IN_USE,
            vec![a],
            d,
        )?;
        add_root("$AttrDef", 4, f);
        // 6 $Bitmap: one bit per cluster, in 8-byte multiples; must be non-resident.
        let bm_len = self.nr_clusters.div_ceil(64) * 8;
        let a = self.placed(AT_DATA, "", bm_len, Fill::Bitmap);
        let d = self.placed_dup(&a);
        let f = self.sys_record(
            6,
            "$Bitmap",
            root_ref,
            SECID_SYSTEM,
            hs,
            MFT_RECORD_IN_USE,
            vec![a],
            d,
        )?;
        add_root("$Bitmap", 6, f);
        // 7 $Boot at LCN 0: 8 KiB or one cluster.
        let boot_clusters = 8192u64.div_ceil(self.cs);
        let a = Attr::non_resident(
            AT_DATA,
            "",
            NonResident {
                runs: vec![Run {
                    lcn: Some(0),
                    len: boot_clusters,
                }],
                data_size: boot_clusters * self.cs,
                init_size: boot_clusters * self.cs,
                max_lcn: self.nr_clusters,
                cluster: self.cs,
                fill: None,
            },
        );
        let d = self.placed_dup(&a);
        let f = self.sys_record(
            7,
            "$Boot",
            root_ref,
            SECID_SYSTEM,
            hs,
            MFT_RECORD_IN_USE,
            vec![a],
            d,
        )?;
        add_root("$Boot", 7, f);
        // 8 $BadClus: empty $DATA and $Bad, one hole over the volume, initialized size 0.
        let bad = Attr::non_resident(
            AT_DATA,
            "$Bad",
            NonResident {
                runs: vec![Run {
                    lcn: None,
                    len: self.nr_clusters,
                }],
                data_size: self.nr_clusters * self.cs,
                init_size: 0,
                max_lcn: self.nr_clusters,
                cluster: self.cs,
                fill: None,
            },
        );
        let attrs = vec![Attr::resident(AT_DATA, "", Vec::new()), bad];
        let f = self.sys_record(
            8,
            "$BadClus",
            root_ref,
            SECID_SYSTEM,
            hs,
            MFT_RECORD_IN_USE,
            attrs,
            (0, 0),
        )?;
        add_root("$BadClus", 8, f);
        // 9 $Secure.
        let mut sds_list: Vec<(u32, Vec<u8>)> = vec![
            (SECID_SYSTEM, meta::system_descriptor(0x0012_0089)),
            (SECID_SYSTEM_RW, meta::system_descriptor(0x0012_019F)),
            (SECID_DEFAULT, meta::default_descriptor()),
        ];
        for (i, sd) in tree.security_descriptors().iter().enumerate() {
            sds_list.push((SECID_TREE_FIRST + i as u32, sd.to_vec()));
        }
        let (sds, headers) = build_sds(&sds_list);
        let mut sii: Vec<Vec<u8>> = Vec::new();
        let mut sdh: Vec<(u32, u32, Vec<u8>)> = Vec::new();
        for h in &headers {
            let hash = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
            let id = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
            sii.push(index::view_entry(&id.to_le_bytes(), 0x14, h, &[]));
            let mut key = hash.to_le_bytes().to_vec();
            key.extend_from_slice(&id.to_le_bytes());
            sdh.push((hash, id, index::view_entry(&key, 0x18, h, b"I\0I\0")));
        }
        sdh.sort_by_key(|(h, i, _)| (*h, *i));
        let sdh: Vec<Vec<u8>> = sdh.into_iter().map(|(_, _, e)| e).collect();
        let sds_attr = self.placed(AT_DATA, "$SDS", sds.len() as u64, Fill::Bytes(sds));
        let base = 0x18 + 72 + 0x18 + 0x42 + 16 + sds_attr.len();
        let half = room.saturating_sub(base) / 2;
        let mut attrs = vec![sds_attr];
        attrs.extend(self.index_attrs(
            "$SDH",
            0,
            index::COLLATION_NTOFS_SECURITY_HASH,
            &sdh,
            half,
        )?);
        attrs.extend(self.index_attrs("$SII", 0, index::COLLATION_NTOFS_ULONG, &sii, half)?);
        let f = self.sys_record(
            9,
            "$Secure",
            root_ref,
            SECID_SYSTEM_RW,
            hs | FA_DUP_VIEW_INDEX,
            MFT_RECORD_IN_USE | MFT_RECORD_IS_VIEW_INDEX,
            attrs,
            (0, 0),
        )?;
        add_root("$Secure", 9, f);
        // 10 $UpCase.
        let a = self.placed(AT_DATA, "", 131072, Fill::Bytes(upcase::table_bytes()));
        let d = self.placed_dup(&a);
        let attrs = vec![a, Attr::resident(AT_DATA, "$Info", meta::upcase_info())];
        let f = self.sys_record(
            10,
            "$UpCase",
            root_ref,
            SECID_SYSTEM,
            hs,
            MFT_RECORD_IN_USE,
            attrs,
            d,
        )?;
        add_root("$UpCase", 10, f);
        // 12–15: reserved, in use, no name.
        for n in 12..16u64 {
            let attrs = vec![
                Attr::resident(
                    AT_STANDARD_INFORMATION,
                    "",
                    si_value(t, hs, SECID_SYSTEM_RW),
                ),
                Attr::resident(AT_DATA, "", Vec::new()),
            ];
            let mut no_ext = u64::MAX;
            self.pack(
                n,
                n as u16,
                MFT_RECORD_IN_USE,
                0,
                attrs,
                &mut no_ext,
                &|| "reserved record".to_string(),
            )?;
        }
        // 24 $Quota, 25 $ObjId, 26 $Reparse (view indexes under $Extend).
        let view_flags = MFT_RECORD_IN_USE | MFT_RECORD_IS_4 | MFT_RECORD_IS_VIEW_INDEX;
        let vfa = hs | FA_DUP_VIEW_INDEX;
        let admins = [1u8, 2, 0, 0, 0, 0, 0, 5, 32, 0, 0, 0, 0x20, 2, 0, 0];
        let quota_o = vec![index::view_entry(
            &admins,
            0x20,
            &0x100u32.to_le_bytes(),
            &0x20u32.to_le_bytes(),
        )];
        let qdata = |flags: u32, sid: &[u8]| {
            let mut d = Vec::new();
            d.extend_from_slice(&2u32.to_le_bytes());
            d.extend_from_slice(&flags.to_le_bytes());
            d.extend_from_slice(&0u64.to_le_bytes());
            d.extend_from_slice(&t[0].to_le_bytes());
            d.extend_from_slice(&(-1i64).to_le_bytes());
            d.extend_from_slice(&(-1i64).to_le_bytes());
            d.extend_from_slice(&0u64.to_le_bytes());
            d.extend_from_slice(sid);
            d
        };
        let quota_q = vec![
            index::view_entry(&1u32.to_le_bytes(), 0x14, &qdata(1, &[]), &[]),
            index::view_entry(&0x100u32.to_le_bytes(), 0x14, &qdata(1, &admins), &[]),
        ];
        let mut attrs =
            self.index_attrs("$O", 0, index::COLLATION_NTOFS_SID, &quota_o, room / 3)?;
        attrs.extend(self.index_attrs(
            "$Q",
            0,
            index::COLLATION_NTOFS_ULONG,
            &quota_q,
            room / 3,
        )?);
        let fq = self.sys_record(
            24,
            "$Quota",
            ext_ref,
            SECID_SYSTEM_RW,
            vfa,
            view_flags,
            attrs,
            (0, 0),
        )?;
        objids.sort_by_key(|a| ulongs(&a.0));
        let oe: Vec<Vec<u8>> = objids.into_iter().map(|(_, e)| e).collect();
        let attrs = self.index_attrs("$O", 0, index::COLLATION_NTOFS_ULONGS, &oe, room / 2)?;
        let fo = self.sys_record(
            25,
            "$ObjId",
            ext_ref,
            SECID_SYSTEM_RW,
            vfa,
            view_flags,
            attrs,
            (0, 0),
        )?;
        reparses.sort_by_key(|a| ulongs(&a[16..28]));
        let attrs =
            self.index_attrs("$R", 0, index::COLLATION_NTOFS_ULONGS, &reparses, room / 2)?;
        let fr = self.sys_record(
            26,
            "$Reparse",
            ext_ref,
            SECID_SYSTEM_RW,
            vfa,
            view_flags,
            attrs,
            (0, 0),
        )?;
        // 11 $Extend.
        let ext_entries = vec![
            index::file_name_entry(mref(25, 25), &fo),
            index::file_name_entry(mref(24, 24), &fq),
            index::file_name_entry(mref(26, 26), &fr),
        ];
        let attrs = self.index_attrs(
            "$I30",
            0x30,
            index::COLLATION_FILE_NAME,
            &ext_entries,
            room / 2,
        )?;
        let f = self.sys_record(
            11,
            "$Extend",
            root_ref,
            SECID_SYSTEM_RW,
            hs,
            MFT_RECORD_IN_USE | MFT_RECORD_IS_DIRECTORY,
            attrs,
            (0, 0),
        )?;
        add_root("$Extend", 11, f);
        // 0 $MFT, now that the record count is final.
        let mft_bytes = self.mft_clusters() * self.cs;
        let mft_records = self.mft_records();
        let a = self.placed(AT_DATA, "", mft_bytes, Fill::Mft);
        let bm = self.placed(AT_BITMAP, "", mft_records.div_ceil(64) * 8, Fill::MftBitmap);
        let f = self.sys_record(
            0,
            "$MFT",
            root_ref,
            SECID_SYSTEM,
            hs,
            MFT_RECORD_IN_USE,
            vec![a, bm],
            (mft_bytes, mft_bytes),
        )?;
        add_root("$MFT", 0, f);
        // 5 the root: its tree entries, the metadata files and '.'.
        let rn = tree.node(Tree::ROOT);
        if rn.meta.reparse.is_some() || rn.meta.object_id.is_some() || !rn.streams.is_empty() {
            return Err(Error::Unsupported {
                path: "\\".into(),
                why: "the root directory cannot carry a reparse point, object id or named streams here".into(),
            });
        }
        let m = &rn.meta;
        let rt = [
            m.creation_time,
            m.last_write_time,
            m.mft_change_time,
            m.last_access_time,
        ];
        let rfa = (m.attributes & !(ATTR_DIRECTORY | 0x80)) | hs;
        let rsec = m
            .security
            .map(|s| SECID_TREE_FIRST + s.0)
            .unwrap_or(SECID_DEFAULT);
        let dot = fn_value(
            root_ref,
            rt,
            0,
            0,
            rfa | FA_DUP_DIRECTORY,
            0,
            &utf16("."),
            NameSpace::Win32AndDos as u8,
        );
        root_list.push((utf16("."), index::file_name_entry(root_ref, &dot)));
        root_list.sort_by(|a, b| upcase::collate_names(&a.0, &b.0));
        let entries: Vec<Vec<u8>> = root_list.into_iter().map(|(_, e)| e).collect();
        let others = 0x18 + 72 + record::align8(0x18 + 0x42 + 2);
        let attrs = self.index_attrs(
            "$I30",
            0x30,
            index::COLLATION_FILE_NAME,
            &entries,
            room.saturating_sub(others),
        )?;
        let mut attrs = attrs;
        attrs.push(Attr::resident(
            AT_STANDARD_INFORMATION,
            "",
            si_value(rt, rfa, rsec),
        ));
        attrs.push(Attr::resident(AT_FILE_NAME, "", dot));
        let mut no_ext = u64::MAX;
        self.pack(
            5,
            5,
            MFT_RECORD_IN_USE | MFT_RECORD_IS_DIRECTORY,
            1,
            attrs,
            &mut no_ext,
            &|| "\\".to_string(),
        )?;
        if no_ext != u64::MAX {
            return Err(Error::Unsupported {
                path: "\\".into(),
                why: "the root directory overflows its MFT record".into(),
            });
        }
        Ok(())
    }
}

/// $SDS contents and the 20-byte header of each entry (facts §2.7).
fn build_sds(list: &[(u32, Vec<u8>)]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut out: Vec<u8> = Vec::new();
    let mut headers = Vec::new();
    let mut off = 0u64;
    let mut end = 0u64;
    for (id, sd) in list {
        let len = 20 + sd.len() as u64;
        if off % SDS_BLOCK + len > SDS_BLOCK {
            // Next data block (even); odd blocks hold the mirror copies.
            off = (off / SDS_BLOCK + 2) * SDS_BLOCK;
        }
        let mut h = Vec::with_capacity(20);
        h.extend_from_slice(&meta::security_hash(sd).to_le_bytes());
        h.extend_from_slice(&id.to_le_bytes());
        h.extend_from_slice(&off.to_le_bytes());
        h.extend_from_slice(&(len as u32).to_le_bytes());
        for at in [off, off + SDS_BLOCK] {
            let need = (at + len) as usize;
            if out.len() < need {
                out.resize(need, 0);
            }
            out[at as usize..at as usize + 20].copy_from_slice(&h);
            out[at as usize + 20..need].copy_from_slice(sd);
        }
        end = off + SDS_BLOCK + len;
        headers.push(h);
        off = (off + len).div_ceil(16) * 16;
    }
    out.truncate(end as usize);
    (out, headers)
}
