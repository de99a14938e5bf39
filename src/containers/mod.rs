//! Container base images placed pre-expanded into the host's image store, as
//! `Install-ContainerOSImage` left them (the layout and encodings are in `store`).

pub mod blank;
pub mod store;

use crate::formats::wim::Wim;
use crate::tree::wim::add_image;
use crate::tree::{Content, Meta, NodeId, Tree};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use store::{BaseImageFacts, HIVE_COPIES, STORE_DIR};

/// One image placed in the store, as the plan and `inspect` show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoreEntry {
    pub source: PathBuf,
    pub name: String,
    pub version: String,
    pub path: String,
    pub size: u64,
    pub files: u64,
    pub utility_vm: bool,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// The facts the store is made of, from the XML of image `index`.
pub fn facts(path: &std::path::Path, wim: &Wim, index: usize) -> io::Result<BaseImageFacts> {
    let info = wim
        .images()
        .get(index - 1)
        .ok_or_else(|| invalid(format!("{}: no image {index}", path.display())))?;
    let missing = |what: &str| {
        invalid(format!(
            "{}: image {index} has no {what} in its XML data; a container base image needs it for the store name and version.wcx",
            path.display()
        ))
    };
    Ok(BaseImageFacts {
        name: info.name.clone().ok_or_else(|| missing("NAME"))?,
        version: (
            info.version_major
                .ok_or_else(|| missing("WINDOWS/VERSION/MAJOR"))?,
            info.version_minor
                .ok_or_else(|| missing("WINDOWS/VERSION/MINOR"))?,
            info.version_build
                .ok_or_else(|| missing("WINDOWS/VERSION/BUILD"))?,
            info.version_spbuild.unwrap_or(0),
        ),
        edition_id: info
            .edition_id
            .clone()
            .or_else(|| info.flags.clone())
            .ok_or_else(|| missing("EDITIONID"))?,
        total_bytes: info.total_bytes.ok_or_else(|| missing("TOTALBYTES"))?,
        creation_time: info.creation_time.ok_or_else(|| missing("CREATIONTIME"))?,
    })
}

/// Security of the deepest existing ancestor of `path`, so new store folders inherit the
/// protection of ProgramData rather than getting none.
fn inherited_meta(tree: &Tree, path: &str, time: u64) -> Meta {
    let mut cur = Tree::ROOT;
    let mut security = tree.node(cur).meta.security;
    for part in path.split('\\').filter(|p| !p.is_empty()) {
        match tree.child(cur, part) {
            Some(c) => {
                cur = c;
                security = tree.node(c).meta.security.or(security);
            }
            None => break,
        }
    }
    Meta {
        security,
        ..Meta::at(time)
    }
}

fn add_bytes(
    tree: &mut Tree,
    dir: NodeId,
    name: &str,
    meta: &Meta,
    bytes: Vec<u8>,
) -> io::Result<()> {
    tree.add_file(dir, name, meta.clone(), Content::bytes(bytes))
        .map_err(io::Error::from)?;
    Ok(())
}

/// Place every base image in the store of `tree`; with none, nothing is written at all.
/// `seed` is asked for once the images are in (blank.vhdx's GUIDs derive from it).
pub fn add_base_images(
    tree: &mut Tree,
    bases: &[(PathBuf, Arc<Wim>, usize)],
    time: u64,
    seed: &mut dyn FnMut() -> io::Result<Vec<u8>>,
) -> io::Result<Vec<StoreEntry>> {
    let mut out: Vec<StoreEntry> = Vec::new();
    for (path, wim, index) in bases {
        let f = facts(path, wim, *index)?;
        let name = f
            .store_name()
            .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        if let Some(prev) = out.iter().find(|e| e.path.ends_with(&name)) {
            return Err(invalid(format!(
                "{} and {} both give the store name {name}; a store holds one image per name and version",
                prev.source.display(),
                path.display()
            )));
        }
        let root_path = f.store_path().map_err(|e| invalid(e.to_string()))?;
        let meta = inherited_meta(tree, &root_path, time);
        let mk = |tree: &mut Tree, p: &str| tree.mkdir_p(p, &meta).map_err(io::Error::from);
        let root = mk(tree, &root_path)?;
        let files = mk(tree, &format!("{root_path}\\Files"))?;
        let report = add_image(tree, files, wim, *index)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        // A second image is the utility VM of Hyper-V containers.
        let utility_vm = wim.image_count() > *index;
        if utility_vm {
            let base_os = mk(tree, &format!("{root_path}\\BaseOs"))?;
            add_image(tree, base_os, wim, index + 1)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        }
        let hives = mk(tree, &format!("{root_path}\\Hives"))?;
        for (src, dst) in HIVE_COPIES {
            let p = format!("{root_path}\\Files\\Windows\\System32\\config\\{src}");
            let node = tree.lookup(&p).ok_or_else(|| {
                invalid(format!(
                    "{}: image {index} has no Windows\\System32\\config\\{src}, which the store copies to Hives\\{dst}",
                    path.display()
                ))
            })?;
            let content = tree.node(node).data.content.clone();
            tree.add_file(hives, dst, meta.clone(), content)
                .map_err(io::Error::from)?;
        }
        add_bytes(
            tree,
            root,
            "version.wcx",
            &meta,
            f.version_wcx().map_err(|e| invalid(e.to_string()))?,
        )?;
        // metadata.json marks a complete install: it is the last file added.
        add_bytes(
            tree,
            root,
            "metadata.json",
            &meta,
            f.metadata_json().map_err(|e| invalid(e.to_string()))?,
        )?;
        out.push(StoreEntry {
            source: path.clone(),
            name: f.name.clone(),
            version: f.version_string(),
            path: format!("C:\\{root_path}"),
            size: f.total_bytes,
            files: report.files,
            utility_vm,
        });
    }
    if !out.is_empty() {
        let dir = tree
            .lookup(STORE_DIR)
            .expect("the store folder was just made");
        let meta = inherited_meta(tree, STORE_DIR, time);
        let image = blank::blank_vhdx(&seed()?, time)?;
        let len = image.len();
        let content = Content::Source {
            source: Arc::new(image),
            id: 0,
            len,
        };
        tree.add_file(dir, "blank.vhdx", meta, content)
            .map_err(io::Error::from)?;
    }
    Ok(out)
}

/// An image found in a volume's store (from its metadata.json), for `inspect`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredImage {
    pub folder: String,
    pub name: String,
    pub version: String,
    pub size: u64,
    pub files: u64,
    pub utility_vm: bool,
}

/// Largest metadata.json we read: it is a one-line object of a few hundred bytes.
const MAX_METADATA: u64 = 64 << 10;

/// List the store of the NTFS volume at `offset` of `disk` (empty when it has none).
pub fn read_store(
    disk: &dyn crate::core::ReadAt,
    offset: u64,
    len: u64,
) -> io::Result<Vec<StoredImage>> {
    let mut v = crate::formats::ntfs::read::VolumeReader::open(disk, offset, len)?;
    let Some(store) = v.lookup(STORE_DIR)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (folder, is_dir, _) in v.list(store)? {
        if !is_dir || !folder.starts_with("CN=") {
            continue;
        }
        let base = format!("{STORE_DIR}\\{folder}");
        let Some(meta) = v.lookup(&format!("{base}\\metadata.json"))? else {
            continue; // an install that never completed
        };
        let text = v.read(meta, MAX_METADATA)?;
        let j: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| invalid(format!("{base}\\metadata.json is not JSON: {e}")))?;
        let files = match v.lookup(&format!("{base}\\Files"))? {
            Some(r) => v.count_files(r)?,
            None => 0,
        };
        out.push(StoredImage {
            folder,
            name: j["Name"].as_str().unwrap_or_default().to_string(),
            version: j["Version"].as_str().unwrap_or_default().to_string(),
            size: j["Size"].as_u64().unwrap_or(0),
            files,
            utility_vm: v.lookup(&format!("{base}\\BaseOs"))?.is_some(),
        });
    }
    Ok(out)
}
