//! Layer entries beyond the executable and its 0755 companions: directories, symlinks, device
//! nodes and regular files with their own mode and owner. End-to-end tests need these to check
//! what a container may reach (device nodes, root-only files, escapes through symlinks) and
//! where volumes can be mounted (an existing directory).

/// What an [`Entry`] is, with what that kind needs besides a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file with these bytes.
    File(Vec<u8>),
    /// A directory.
    Dir,
    /// A symbolic link to this target, stored verbatim: relative, absolute or with `..`.
    Symlink(String),
    /// A hard link to the regular file of the layer at this absolute path.
    HardLink(String),
    /// A character device node.
    CharDevice { major: u32, minor: u32 },
    /// A block device node.
    BlockDevice { major: u32, minor: u32 },
}

/// One extra entry of an image's layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The absolute path in the rootfs, e.g. `/data` (a trailing `/` is ignored).
    pub path: String,
    pub kind: EntryKind,
    /// The permission bits, including setuid, setgid and sticky (e.g. `0o1777`); the file type
    /// comes from `kind`.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

impl Entry {
    /// A root-owned regular file.
    pub fn file(path: &str, data: impl Into<Vec<u8>>, mode: u32) -> Self {
        Self::root_owned(path, EntryKind::File(data.into()), mode)
    }

    /// A root-owned directory.
    pub fn dir(path: &str, mode: u32) -> Self {
        Self::root_owned(path, EntryKind::Dir, mode)
    }

    /// A root-owned symlink. Its mode is 0777 because Linux ignores a symlink's own mode and
    /// that is what `ln -s` leaves.
    pub fn symlink(path: &str, target: &str) -> Self {
        Self::root_owned(path, EntryKind::Symlink(target.to_owned()), 0o777)
    }

    /// A hard link to the layer's file at `target` (absolute), with that file's mode.
    pub fn hard_link(path: &str, target: &str) -> Self {
        Self::root_owned(path, EntryKind::HardLink(target.to_owned()), 0o755)
    }

    /// A root-owned character device node.
    pub fn char_device(path: &str, major: u32, minor: u32, mode: u32) -> Self {
        Self::root_owned(path, EntryKind::CharDevice { major, minor }, mode)
    }

    /// A root-owned block device node.
    pub fn block_device(path: &str, major: u32, minor: u32, mode: u32) -> Self {
        Self::root_owned(path, EntryKind::BlockDevice { major, minor }, mode)
    }

    /// The same entry owned by `uid`:`gid`.
    pub fn owned_by(self, uid: u64, gid: u64) -> Self {
        Self { uid, gid, ..self }
    }

    fn root_owned(path: &str, kind: EntryKind, mode: u32) -> Self {
        Self {
            path: path.to_owned(),
            kind,
            mode,
            uid: 0,
            gid: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_make_root_owned_entries_of_their_kind() {
        let secret = Entry::file("/secret", "secret\n", 0o600);
        assert_eq!(secret.kind, EntryKind::File(b"secret\n".to_vec()));
        assert_eq!((secret.mode, secret.uid, secret.gid), (0o600, 0, 0));
        assert_eq!(Entry::dir("/data", 0o755).kind, EntryKind::Dir);
        let link = Entry::symlink("/bin/sh", "busybox");
        assert_eq!(link.kind, EntryKind::Symlink("busybox".to_owned()));
        assert_eq!(link.mode, 0o777);
        assert_eq!(
            Entry::char_device("/chr", 1, 3, 0o666).kind,
            EntryKind::CharDevice { major: 1, minor: 3 }
        );
        assert_eq!(
            Entry::block_device("/blk", 7, 0, 0o660).kind,
            EntryKind::BlockDevice { major: 7, minor: 0 }
        );
    }

    #[test]
    fn owned_by_changes_only_the_owner() {
        let plain = Entry::file("/f", "x", 0o640);
        let owned = plain.clone().owned_by(1000, 100);
        assert_eq!((owned.uid, owned.gid), (1000, 100));
        assert_eq!(
            (owned.path, owned.kind, owned.mode),
            (plain.path, plain.kind, plain.mode)
        );
    }
}
