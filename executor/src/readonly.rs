//! Read-only views of the host files that containers' processes hold:
//! the shim binary their children run from, and the compiled-code cache.
//!
//! A file reached through a mount marked read-only cannot be opened for
//! writing or truncated through any path to it, `/proc/<pid>/exe`,
//! `/proc/<pid>/fd/N` and `/proc/<pid>/map_files/…` included: the kernel
//! checks the mount of the file's path, and these links keep the mount
//! they were opened through. That is the defence against CVE-2019-5736,
//! where a container reopens the runtime's binary for writing through
//! `/proc/<pid>/exe` and the host's next start runs its code.
//!
//! The views are detached clones of a mount (`open_tree` with
//! `OPEN_TREE_CLONE`, then `mount_setattr`), attached nowhere: they leave
//! no mount behind, whatever happens to the process, and no container can
//! reach them by path. The clone shares the files' inodes and page cache
//! with the originals, so code pages stay shared between all containers
//! (a memfd copy per process would cost the binary's size in memory).

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use crate::error::{Error, Result};

// From <linux/mount.h>; the libc crate does not define them.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

/// `struct mount_attr` of mount_setattr(2), version 0.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A read-only, nosuid, nodev view of `path` (a file or a directory,
/// resolved from `dir`, or the `dir` itself when `path` is empty): a
/// descriptor of the detached clone's root, close-on-exec.
pub fn view(dir: impl AsFd, path: &CStr) -> Result<OwnedFd> {
    let flags = OPEN_TREE_CLONE
        | libc::O_CLOEXEC as libc::c_uint
        | if path.is_empty() {
            libc::AT_EMPTY_PATH as libc::c_uint
        } else {
            0
        };
    // SAFETY: open_tree reads the NUL-terminated path and returns a new
    // descriptor or -1; no memory of ours is kept.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            dir.as_fd().as_raw_fd(),
            path.as_ptr(),
            flags,
        )
    };
    if fd < 0 {
        return Err(Error::Io {
            what: format!("clone the mount of {path:?} (open_tree)"),
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: open_tree just returned this descriptor and nothing else owns it.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr reads `attr`, of the size passed, during the
    // call only; the path is the empty string with AT_EMPTY_PATH.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &raw const attr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret < 0 {
        return Err(Error::Io {
            what: format!("make the clone of {path:?} read-only (mount_setattr)"),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(tree)
}

/// The binary this process runs from, through a read-only view: what
/// children are exec'd from (`spawn.rs`). `/proc/self/exe` names the very
/// file this process started from even when an upgrade has replaced it on
/// disk since, so a shim and its children always speak the same protocol.
///
/// Kernels before 5.12 have no mount_setattr: there the binary is copied
/// once into a memfd sealed against every change, as runc does, at the
/// cost of its size in this process's memory.
pub fn self_exe() -> Result<OwnedFd> {
    match view(nix::fcntl::AT_FDCWD, c"/proc/self/exe") {
        Ok(view) => Ok(view),
        Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOSYS) => {
            log::warn!(
                "no open_tree/mount_setattr on this kernel: children run from a sealed copy"
            );
            sealed_copy_of_self()
        }
        Err(e) => Err(e),
    }
}

fn sealed_copy_of_self() -> Result<OwnedFd> {
    let mut exe =
        std::fs::File::open("/proc/self/exe").map_err(Error::io("open /proc/self/exe"))?;
    sealed(c"containerd-shim-wasmtime", &mut exe, "the shim binary")
}

/// The seals that make a memfd immutable for good: no write, no size
/// change, no seal removed.
const SEALS: nix::fcntl::SealFlag = nix::fcntl::SealFlag::F_SEAL_SEAL
    .union(nix::fcntl::SealFlag::F_SEAL_SHRINK)
    .union(nix::fcntl::SealFlag::F_SEAL_GROW)
    .union(nix::fcntl::SealFlag::F_SEAL_WRITE);

/// A memfd holding what `from` reads, sealed against every change:
/// whoever receives it may trust that its bytes never change after it
/// checked them ([`is_sealed`]). `what` names the bytes in errors.
pub fn sealed(name: &std::ffi::CStr, from: &mut impl std::io::Read, what: &str) -> Result<OwnedFd> {
    use nix::sys::memfd::{MFdFlags, memfd_create};
    let flags = MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING;
    let memfd =
        memfd_create(name, flags).map_err(Error::sys(format!("create a memfd for {what}")))?;
    let mut copy = std::fs::File::from(memfd);
    std::io::copy(from, &mut copy).map_err(Error::io(format!("copy {what} into a memfd")))?;
    seal(&copy, what)?;
    Ok(OwnedFd::from(copy))
}

/// Seals a filled memfd (made with `MFD_ALLOW_SEALING`) against every
/// change. `what` names its bytes in errors.
pub fn seal(memfd: &impl std::os::fd::AsFd, what: &str) -> Result<()> {
    nix::fcntl::fcntl(memfd, nix::fcntl::FcntlArg::F_ADD_SEALS(SEALS))
        .map(drop)
        .map_err(Error::sys(format!("seal the memfd of {what}")))
}

/// True when `fd` is a memfd that [`sealed`] made immutable.
pub fn is_sealed(fd: &impl std::os::fd::AsFd) -> bool {
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GET_SEALS)
        .is_ok_and(|seals| nix::fcntl::SealFlag::from_bits_truncate(seals).contains(SEALS))
}

/// Makes this process non-dumpable: its `/proc/<pid>` files become root's
/// and ptrace, `pidfd_getfd`, `process_vm_writev` and `/proc/<pid>/mem`,
/// `fd`, `map_files`, `root`, `cwd` and `exe` are refused to every process
/// without CAP_SYS_PTRACE, which no container has by default. Forks
/// inherit it; an execve resets it, so every program of ours calls this
/// first thing.
pub fn make_non_dumpable() -> Result<()> {
    nix::sys::prctl::set_dumpable(false).map_err(Error::sys("prctl(PR_SET_DUMPABLE, 0)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        eprintln!("skipped: read-only mount views need root");
        false
    }

    #[test]
    fn a_sealed_memfd_never_changes() {
        use std::io::Write;
        let fd = sealed(c"test", &mut &b"module bytes"[..], "test bytes").unwrap();
        assert!(is_sealed(&fd));
        let mut file = std::fs::File::from(fd);
        assert!(file.write_all(b"x").is_err());
        assert!(file.set_len(0).is_err());
        assert!(file.set_len(100).is_err());
        assert_eq!(
            std::fs::read(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&file)
            ))
            .unwrap(),
            b"module bytes"
        );
        assert!(!is_sealed(&tempfile::tempfile().unwrap()));
    }

    #[test]
    fn a_file_of_the_view_cannot_be_reopened_for_writing() {
        if !root() {
            return;
        }
        let temp = tempfile::tempdir().unwrap();
        std::fs::write(temp.path().join("entry"), b"code").unwrap();
        let dir = std::fs::File::open(temp.path()).unwrap();
        let tree = view(&dir, c"").unwrap();
        let file = nix::fcntl::openat(
            &tree,
            "entry",
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        let link = format!("/proc/self/fd/{}", file.as_raw_fd());
        assert_eq!(std::fs::read(&link).unwrap(), b"code");
        for attempt in [
            std::fs::OpenOptions::new().write(true).open(&link),
            std::fs::OpenOptions::new().append(true).open(&link),
        ] {
            let error = attempt.expect_err("a write open through the view");
            assert_eq!(error.raw_os_error(), Some(libc::EROFS), "{error}");
        }
        let error = nix::unistd::truncate(link.as_str(), 0).unwrap_err();
        assert_eq!(error, nix::errno::Errno::EROFS);
        // The original stays writable for its owner.
        std::fs::write(temp.path().join("entry"), b"new").unwrap();
        assert_eq!(std::fs::read(&link).unwrap(), b"new");
    }

    #[test]
    fn the_binary_view_is_this_binary_and_read_only() {
        if !root() {
            return;
        }
        let exe = self_exe().unwrap();
        let link = format!("/proc/self/fd/{}", exe.as_raw_fd());
        let ours = std::fs::metadata("/proc/self/exe").unwrap();
        let viewed = std::fs::metadata(&link).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((ours.dev(), ours.ino()), (viewed.dev(), viewed.ino()));
        // A running binary refuses writers anyway (ETXTBSY); what outlives
        // it is the mount's flag, which every reopen goes through.
        let flags = nix::sys::statvfs::fstatvfs(&exe).unwrap().flags();
        assert!(
            flags.contains(nix::sys::statvfs::FsFlags::ST_RDONLY),
            "{flags:?}"
        );
        assert!(
            flags.contains(nix::sys::statvfs::FsFlags::ST_NOSUID),
            "{flags:?}"
        );
    }
}
