//! The sandbox steps the child takes on itself before it loads the guest:
//! join namespaces given by path, make the container's rootfs its root,
//! set the hostname and drop to the container's user.

use std::fs::File;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::unistd::{Gid, Uid, chdir, pivot_root, setgid, setgroups, sethostname, setuid};

use crate::caps;
use crate::error::{Error, Result};
use crate::spec::ChildConfig;

pub fn enter(config: &ChildConfig) -> Result<()> {
    join_namespaces(config)?;
    // The shim put the child into its cgroup before letting it exec, so
    // the namespace's root is the container's cgroup, as under runc.
    if config.new_cgroup_namespace {
        unshare(CloneFlags::CLONE_NEWCGROUP).map_err(Error::sys("unshare the cgroup namespace"))?;
    }
    enter_rootfs(&config.rootfs, config.readonly_root, &config.cwd)?;
    if let Some(hostname) = &config.hostname {
        sethostname(hostname).map_err(Error::sys(format!("set hostname {hostname}")))?;
    }
    drop_privileges(config)?;
    chdir(&config.cwd).map_err(Error::sys(format!(
        "process.cwd {} inside the rootfs",
        config.cwd.display()
    )))
}

fn join_namespaces(config: &ChildConfig) -> Result<()> {
    for (flag, path) in &config.join {
        let file =
            File::open(path).map_err(Error::io(format!("open namespace {}", path.display())))?;
        setns(file, *flag).map_err(Error::sys(format!("join namespace {}", path.display())))?;
    }
    Ok(())
}

/// Makes `rootfs` the root of the child's mount namespace with
/// pivot_root, so that the old root is not reachable any more (chroot
/// alone can be escaped by a process with CAP_SYS_CHROOT).
fn enter_rootfs(rootfs: &Path, readonly: bool, cwd: &Path) -> Result<()> {
    let none: Option<&str> = None;
    // Nothing the child mounts may propagate back to the host.
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .map_err(Error::sys("make the mount namespace private"))?;
    // pivot_root needs the new root to be a mount point.
    mount(
        Some(rootfs),
        rootfs,
        none,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        none,
    )
    .map_err(Error::sys(format!(
        "bind mount rootfs {}",
        rootfs.display()
    )))?;
    chdir(rootfs).map_err(Error::sys(format!("enter rootfs {}", rootfs.display())))?;
    // Stacking the old root under the new one and detaching it avoids
    // needing a directory for it inside the container's rootfs.
    pivot_root(".", ".").map_err(Error::sys(format!("pivot_root into {}", rootfs.display())))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(Error::sys("detach the old root"))?;
    chdir("/").map_err(Error::sys("enter the new root"))?;
    // As runc, a missing working directory is created, as root and before
    // the root turns read-only; if that fails, the chdir later says why.
    let _ = std::fs::create_dir_all(cwd);
    if readonly {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC;
        mount(none, "/", none, flags, none).map_err(Error::sys("make the root read-only"))?;
    }
    Ok(())
}

/// Switches to the container's user and capabilities in runc's order.
fn drop_privileges(config: &ChildConfig) -> Result<()> {
    caps::drop_bounding(&config.capabilities)?;
    caps::keep_across_setuid(true)?;
    switch_user(config)?;
    caps::keep_across_setuid(false)?;
    caps::apply(&config.capabilities)?;
    if config.no_new_privileges {
        nix::sys::prctl::set_no_new_privs().map_err(Error::sys("set no_new_privs"))?;
    }
    Ok(())
}

fn switch_user(config: &ChildConfig) -> Result<()> {
    let groups: Vec<Gid> = config
        .additional_gids
        .iter()
        .copied()
        .map(Gid::from_raw)
        .collect();
    setgroups(&groups).map_err(Error::sys("set process.user.additionalGids"))?;
    setgid(Gid::from_raw(config.gid))
        .map_err(Error::sys(format!("set process.user.gid {}", config.gid)))?;
    setuid(Uid::from_raw(config.uid))
        .map_err(Error::sys(format!("set process.user.uid {}", config.uid)))
}
