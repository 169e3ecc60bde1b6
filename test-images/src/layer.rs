//! Builds an image's single layer: the executable at its entrypoint path (unless an entry stands
//! there instead), the extra 0755 files, the extra [`Entry`]s of any kind, the directories those
//! need, and `/tmp`.
//!
//! The layer is reproducible: entries are sorted by path, every header has the same mtime and no
//! user or group names, and images without extra entries keep exactly the bytes (and so the
//! digests) they had before entries of other kinds existed.

use std::collections::BTreeMap;
use std::io;

use anyhow::{Context, Result, bail};
use tar::{Builder, EntryType, Header};

use crate::ImageSpec;
use crate::entry::{Entry, EntryKind};

/// Every tar entry's mtime: 2024-01-01T00:00:00Z, the same instant as the config's `created`.
pub(crate) const MTIME: u64 = 1_704_067_200;

/// The world-writable `/tmp` every layer has, which the file test module writes into.
const TMP: &str = "tmp";
const TMP_MODE: u32 = 0o1777;
/// The mode of the directories the layer adds because an entry lives below them.
const PARENT_MODE: u32 = 0o755;

/// What one layer entry is; borrowed from the image so that building the layer copies no data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind<'a> {
    File(&'a [u8]),
    Dir,
    Symlink(&'a str),
    /// A hard link to this relative path, which the layer holds before it.
    HardLink(&'a str),
    Char(u32, u32),
    Block(u32, u32),
}

/// One entry of the layer, collected first so that everything can be sorted by path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Item<'a> {
    /// Relative, because containerd unpacks the layer below the rootfs, and without a trailing
    /// `/`, so that sorting puts every directory right before what it contains.
    path: String,
    kind: Kind<'a>,
    mode: u32,
    uid: u64,
    gid: u64,
}

impl<'a> Item<'a> {
    fn root_owned(path: String, kind: Kind<'a>, mode: u32) -> Self {
        Self {
            path,
            kind,
            mode,
            uid: 0,
            gid: 0,
        }
    }
}

/// Builds the layer tar of `image`.
pub(crate) fn layer_tar(image: &ImageSpec) -> Result<Vec<u8>> {
    let mut layer = Builder::new(Vec::new());
    for item in layer_items(image)? {
        append_item(&mut layer, &item)?;
    }
    layer.into_inner().context("failed to finish the layer tar")
}

/// Lists the layer's entries in archive order.
///
/// Everything is sorted by path, and `tmp/` (mode 1777) comes last, where it always was, unless
/// the image carries its own `/tmp` directory or something below `/tmp`: moving it into the
/// sort for every image would change the bytes of images whose executable sorts after it
/// (`trap.wasm`) and so their digests.
fn layer_items(image: &ImageSpec) -> Result<Vec<Item<'_>>> {
    // An image whose entrypoint is one of its entries (a symlink, say) has no executable file
    // of its own; a non-empty executable there still clashes with the entry below.
    let entrypoint = relative_path(&image.entrypoint)?;
    let entrypoint_is_an_entry = image
        .entries
        .iter()
        .any(|entry| relative_path(&entry.path).is_ok_and(|path| path == entrypoint));
    let mut items = Vec::new();
    if !(entrypoint_is_an_entry && image.executable.is_empty()) {
        items.push(Item::root_owned(
            entrypoint,
            Kind::File(&image.executable),
            0o755,
        ));
    }
    for (path, data) in &image.files {
        items.push(Item::root_owned(
            relative_path(path)?,
            Kind::File(data),
            0o755,
        ));
    }
    for entry in &image.entries {
        items.push(entry_item(entry)?);
    }

    let own_tmp = items
        .iter()
        .any(|item| item.path == TMP && item.kind == Kind::Dir);
    let default_tmp = Item::root_owned(TMP.to_owned(), Kind::Dir, TMP_MODE);
    let mut known = BTreeMap::new();
    for item in items.iter().chain((!own_tmp).then_some(&default_tmp)) {
        if known
            .insert(item.path.clone(), item.kind == Kind::Dir)
            .is_some()
        {
            bail!("the layer would hold /{} twice", item.path);
        }
    }

    let mut parents = Vec::new();
    for item in &items {
        for parent in ancestors(&item.path) {
            match known.get(parent) {
                Some(true) => {}
                Some(false) => bail!("/{} needs /{parent} to be a directory", item.path),
                None => {
                    known.insert(parent.to_owned(), true);
                    parents.push(Item::root_owned(parent.to_owned(), Kind::Dir, PARENT_MODE));
                }
            }
        }
    }
    let tmp_has_children = items
        .iter()
        .any(|item| item.path.starts_with(&format!("{TMP}/")));
    items.extend(parents);
    let tmp_last = !own_tmp && !tmp_has_children;
    if !own_tmp && tmp_has_children {
        items.push(default_tmp.clone());
    }
    // A hard link must follow the file it names: links come after everything else.
    items.sort_by(|a, b| {
        let link = |item: &Item| matches!(item.kind, Kind::HardLink(_));
        (link(a), &a.path).cmp(&(link(b), &b.path))
    });
    for item in &items {
        if let Kind::HardLink(target) = &item.kind
            && known.get(*target) != Some(&false)
        {
            bail!(
                "/{} links to /{target}, which is no file of the layer",
                item.path
            );
        }
    }
    if tmp_last {
        items.push(default_tmp);
    }
    Ok(items)
}

fn entry_item(entry: &Entry) -> Result<Item<'_>> {
    let kind = match &entry.kind {
        EntryKind::File(data) => Kind::File(data),
        EntryKind::Dir => Kind::Dir,
        EntryKind::Symlink(target) => Kind::Symlink(target),
        EntryKind::HardLink(target) => {
            relative_path(target)?;
            Kind::HardLink(target.trim_start_matches('/').trim_end_matches('/'))
        }
        EntryKind::CharDevice { major, minor } => Kind::Char(*major, *minor),
        EntryKind::BlockDevice { major, minor } => Kind::Block(*major, *minor),
    };
    if entry.mode & !0o7777 != 0 {
        bail!(
            "/{} has mode {:o}: give only permission bits, the kind sets the type",
            entry.path.trim_start_matches('/'),
            entry.mode
        );
    }
    Ok(Item {
        path: relative_path(&entry.path)?,
        kind,
        mode: entry.mode,
        uid: entry.uid,
        gid: entry.gid,
    })
}

/// Turns an absolute rootfs path into the layer's relative form, refusing paths that would not
/// name one place below the root (containerd would reject `..`; an empty path is the root).
fn relative_path(path: &str) -> Result<String> {
    let relative = path.trim_start_matches('/').trim_end_matches('/');
    if relative.is_empty()
        || relative
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
    {
        bail!("{path:?} is not a plain path below the root of the layer");
    }
    Ok(relative.to_owned())
}

/// Yields the proper ancestors of a relative path, outermost first: `a/b/c` gives `a`, `a/b`.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(end, _)| &path[..end])
}

/// Appends one item with a deterministic header.
fn append_item(layer: &mut Builder<Vec<u8>>, item: &Item) -> Result<()> {
    let path = &item.path;
    let (kind, data): (EntryType, &[u8]) = match item.kind {
        Kind::File(data) => (EntryType::Regular, data),
        Kind::Dir => (EntryType::Directory, &[]),
        Kind::Symlink(_) => (EntryType::Symlink, &[]),
        Kind::HardLink(_) => (EntryType::Link, &[]),
        Kind::Char(..) => (EntryType::Char, &[]),
        Kind::Block(..) => (EntryType::Block, &[]),
    };
    let mut header = header(kind, item.mode, data.len() as u64);
    header.set_uid(item.uid);
    header.set_gid(item.gid);
    if let Kind::Char(major, minor) | Kind::Block(major, minor) = item.kind {
        header
            .set_device_major(major)
            .and_then(|()| header.set_device_minor(minor))
            .with_context(|| format!("failed to set the device numbers of /{path}"))?;
    }
    let added = match item.kind {
        // append_link writes a long target as a GNU extension instead of failing.
        Kind::Symlink(target) => layer.append_link(&mut header, path, target),
        Kind::HardLink(target) => layer.append_link(&mut header, path, target),
        // A directory's name ends with `/` in tar, as `tmp/` always has in these layers.
        Kind::Dir => layer.append_data(&mut header, format!("{path}/"), io::empty()),
        _ => layer.append_data(&mut header, path, data),
    };
    added.with_context(|| format!("failed to add /{path} to the layer"))
}

/// A header with root ownership, no user or group names, the fixed mtime and the given type,
/// mode and size. Appending it sets the path and then the checksum.
pub(crate) fn header(kind: EntryType, mode: u32, size: u64) -> Header {
    let mut header = Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(MTIME);
    header.set_size(size);
    header
}

#[cfg(test)]
#[path = "layer_tests.rs"]
mod tests;
