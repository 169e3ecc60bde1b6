//! The container's root, built as runc builds it: the host's mounts made
//! slave (or the spec's `rootfsPropagation`), the rootfs bound onto
//! itself, every mount of the spec in order, /dev populated, pivot_root,
//! then the read-only remounts.

use std::path::Path;

use nix::fcntl::{OFlag, open};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::Mode;
use nix::unistd::{chdir, fchdir, pivot_root};

use super::mount_spec::MountSpec;
use super::paths::{Inside, secure_join};
use crate::error::{Error, Result};
use crate::spec::ChildConfig;

const NONE: Option<&str> = None;

/// Everything up to and including pivot_root and the read-only remounts.
pub fn enter(config: &ChildConfig, before_pivot: &dyn Fn() -> Result<()>) -> Result<()> {
    let rootfs = &config
        .rootfs
        .canonicalize()
        .map_err(Error::io(format!("rootfs {}", config.rootfs.display())))?;
    mount(NONE, "/", NONE, config.propagation, NONE)
        .map_err(Error::sys("set the propagation of the container's mounts"))?;
    // pivot_root refuses a new root whose parent mount is shared, and a
    // shared parent would carry the container's mounts to the host.
    make_parent_private(rootfs)?;
    // pivot_root needs the new root to be a mount point.
    mount(
        Some(rootfs),
        rootfs,
        NONE,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        NONE,
    )
    .map_err(Error::sys(format!(
        "bind mount rootfs {}",
        rootfs.display()
    )))?;
    let mut readonly_later = Vec::new();
    for (i, m) in config.mounts.iter().enumerate() {
        let target = secure_join(rootfs, &m.destination)?;
        let inside = Path::new("/").join(target.strip_prefix(rootfs).unwrap_or(&target));
        super::paths::check_proc_mount(&inside, &m.fstype).map_err(|e| in_mount(i, m, e))?;
        log::debug!("mount {} ({}) on {}", m.source, m.fstype, target.display());
        let remount = mount_one(rootfs, &target, m, config.new_cgroup_namespace)
            .and_then(|remount| set_recursive(rootfs, &target, m).map(|()| remount))
            .map_err(|e| in_mount(i, m, e))?;
        if remount {
            readonly_later.push(target);
        }
    }
    let dev_bound = config
        .mounts
        .iter()
        .any(|m| m.is_bind() && m.destination == Path::new("/dev"));
    if !dev_bound {
        super::dev::populate(rootfs, &config.devices)?;
    }
    // As runc: createContainer hooks run from the rootfs, before the pivot.
    std::env::set_current_dir(rootfs).map_err(Error::io(format!("enter {}", rootfs.display())))?;
    before_pivot()?;
    switch_root(rootfs)?;
    // As runc, a missing working directory is created, as root and before
    // the root turns read-only; if that fails, the chdir later says why.
    let _ = std::fs::create_dir_all(&config.cwd);
    // As runc: the terminal is made in the new root's devpts, after the
    // spec's mounts and before the root turns read-only.
    if let Some(terminal) = &config.terminal {
        crate::console::setup(terminal, crate::console::For::Container)?;
    }
    for target in readonly_later {
        let inside = Path::new("/").join(target.strip_prefix(rootfs).unwrap_or(&target));
        super::paths::remount_readonly(&inside, MsFlags::empty())?;
    }
    if config.readonly_root {
        super::paths::remount_readonly(Path::new("/"), MsFlags::empty())?;
    }
    Ok(())
}

fn in_mount(index: usize, m: &MountSpec, e: Error) -> Error {
    Error::InvalidSpec(format!(
        "mounts[{index}] ({} on {}): {}",
        m.fstype,
        m.destination.display(),
        e.chain()
    ))
}

/// Performs one mount. True when it is to be made read-only only after
/// /dev is populated (a read-only tmpfs, which must be writable first).
fn mount_one(rootfs: &Path, target: &Path, m: &MountSpec, cgroupns: bool) -> Result<bool> {
    if m.is_bind() {
        bind(rootfs, target, m)?;
    } else if m.fstype == "cgroup" || m.fstype == "cgroup2" {
        super::cgroup_mount::mount_cgroups(rootfs, target, m, cgroupns)?;
    } else {
        std::fs::create_dir_all(target).map_err(Error::io(format!(
            "create mount point {}",
            target.display()
        )))?;
        let deferred = m.fstype == "tmpfs" && m.flags.contains(MsFlags::MS_RDONLY);
        let flags = match deferred {
            true => m.flags - MsFlags::MS_RDONLY,
            false => m.flags,
        };
        let data = Some(m.data.as_str()).filter(|d| !d.is_empty());
        let at = Inside::open(rootfs, target)?;
        let fstype = Some(m.fstype.as_str());
        mount(Some(m.source.as_str()), at.path(), fstype, flags, data)
            .map_err(Error::sys(format!("mount {}", m.fstype)))?;
        propagate(rootfs, target, m)?;
        return Ok(deferred);
    }
    propagate(rootfs, target, m)?;
    Ok(false)
}

/// Sets and clears `m`'s recursive attributes (`rro`, `rnosuid`…) on the
/// mount at `target` and every mount below it, with mount_setattr(2)
/// (Linux 5.12), as runc does.
fn set_recursive(rootfs: &Path, target: &Path, m: &MountSpec) -> Result<()> {
    if m.recursive_set == 0 && m.recursive_clear == 0 {
        return Ok(());
    }
    let at = Inside::open(rootfs, target)?;
    let path = std::ffi::CString::new(at.path())
        .map_err(|_| Error::InvalidSpec(format!("mount point {}", target.display())))?;
    let attr = libc::mount_attr {
        attr_set: m.recursive_set,
        attr_clr: m.recursive_clear,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: a valid C string and a mount_attr of the size given.
    let done = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_RECURSIVE,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if done != 0 {
        let errno = nix::errno::Errno::last();
        let what = match errno {
            nix::errno::Errno::ENOSYS => "recursive mount options need mount_setattr (Linux 5.12)",
            _ => "set the recursive mount options",
        };
        return Err(Error::sys(what)(errno));
    }
    Ok(())
}

/// Makes the mount that holds `rootfs` private if it is shared, as runc
/// does before it binds the rootfs.
fn make_parent_private(rootfs: &Path) -> Result<()> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(Error::io("read /proc/self/mountinfo"))?;
    let parent = mountinfo
        .lines()
        .filter_map(|line| {
            let (left, _) = line.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            let point = *fields.get(4)?;
            let shared = fields.iter().skip(6).any(|f| f.starts_with("shared:"));
            rootfs
                .starts_with(point)
                .then_some((point.to_string(), shared))
        })
        .max_by_key(|(point, _)| point.len());
    if let Some((point, true)) = parent {
        mount(NONE, point.as_str(), NONE, MsFlags::MS_PRIVATE, NONE)
            .map_err(Error::sys(format!("make {point} private")))?;
    }
    Ok(())
}

/// A bind volume: the target is made to match the source's kind, bound,
/// then remounted with the requested flags (a bind mount ignores them).
fn bind(rootfs: &Path, target: &Path, m: &MountSpec) -> Result<()> {
    let source = Path::new(&m.source);
    let meta = std::fs::metadata(source)
        .map_err(Error::io(format!("bind source {}", source.display())))?;
    if meta.is_dir() {
        std::fs::create_dir_all(target)
    } else {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(Error::io(format!("create {}", parent.display())))?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(target)
            .map(drop)
    }
    .map_err(Error::io(format!(
        "create mount point {}",
        target.display()
    )))?;
    let recursive = m.flags & MsFlags::MS_REC;
    let at = Inside::open(rootfs, target)?;
    mount(
        Some(source),
        at.path(),
        NONE,
        MsFlags::MS_BIND | recursive,
        NONE,
    )
    .map_err(Error::sys(format!("bind {}", source.display())))?;
    let extra = m.flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
    if !extra.is_empty() {
        // The new mount now covers the target: reach it afresh.
        let at = Inside::open(rootfs, target)?;
        let flags = extra | MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
        mount(NONE, at.path(), NONE, flags, NONE).map_err(Error::sys(format!(
            "remount {} with {extra:?}",
            target.display()
        )))?;
    }
    Ok(())
}

fn propagate(rootfs: &Path, target: &Path, m: &MountSpec) -> Result<()> {
    if m.propagation.is_empty() {
        return Ok(());
    }
    let at = Inside::open(rootfs, target)?;
    for flag in &m.propagation {
        mount(NONE, at.path(), NONE, *flag, NONE)
            .map_err(Error::sys(format!("set propagation {flag:?}")))?;
    }
    Ok(())
}

/// Makes `rootfs` the root with pivot_root, so that the old root is not
/// reachable any more (chroot alone can be escaped with CAP_SYS_CHROOT).
fn switch_root(rootfs: &Path) -> Result<()> {
    let old_root = open(
        "/",
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(Error::sys("open the old root"))?;
    chdir(rootfs).map_err(Error::sys(format!("enter rootfs {}", rootfs.display())))?;
    // Stacking the old root under the new one and detaching it avoids
    // needing a directory for it inside the container's rootfs.
    pivot_root(".", ".").map_err(Error::sys(format!("pivot_root into {}", rootfs.display())))?;
    // "." must name the old root's mount now, as in runc: from the new
    // root's directory a propagation change would reach the container's
    // own mounts (an rshared volume would turn slave), though umount2
    // finds the old root stacked on top either way.
    fchdir(&old_root).map_err(Error::sys("enter the old root"))?;
    drop(old_root);
    // The old root must not propagate the detach back to the host.
    mount(NONE, ".", NONE, MsFlags::MS_SLAVE | MsFlags::MS_REC, NONE)
        .map_err(Error::sys("make the old root slave"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(Error::sys("detach the old root"))?;
    chdir("/").map_err(Error::sys("enter the new root"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn a_failed_mount_names_its_index_and_destination() {
        let m = MountSpec {
            destination: PathBuf::from("/data"),
            fstype: "tmpfs".into(),
            source: "tmpfs".into(),
            flags: MsFlags::empty(),
            propagation: Vec::new(),
            data: String::new(),
            recursive_set: 0,
            recursive_clear: 0,
        };
        let e = in_mount(4, &m, Error::InvalidSpec("boom".into())).to_string();
        assert!(
            e.contains("mounts[4] (tmpfs on /data)") && e.contains("boom"),
            "{e}"
        );
    }
}
