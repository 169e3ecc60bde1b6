//! A `cgroup` mount of the spec, as runc makes it. On cgroup v2 a fresh
//! cgroup2 filesystem. On v1 a tmpfs with one directory per hierarchy:
//! with a cgroup namespace a fresh mount of that hierarchy, without one
//! the container's own cgroup bound from the host; and links for
//! co-mounted controllers (`cpu` → `cpu,cpuacct`).

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};

use super::mount_spec::MountSpec;
use super::paths::Inside;
use crate::error::{Error, Result};

const NONE: Option<&str> = None;

pub fn mount_cgroups(rootfs: &Path, target: &Path, m: &MountSpec, cgroupns: bool) -> Result<()> {
    std::fs::create_dir_all(target).map_err(Error::io(format!(
        "create mount point {}",
        target.display()
    )))?;
    let at = Inside::open(rootfs, target)?;
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        return mount(Some("cgroup2"), at.path(), Some("cgroup2"), m.flags, NONE)
            .map_err(Error::sys("mount cgroup2"));
    }
    let tmpfs_flags = m.flags - MsFlags::MS_RDONLY;
    let mode = Some("mode=755");
    mount(Some("tmpfs"), at.path(), Some("tmpfs"), tmpfs_flags, mode)
        .map_err(Error::sys("mount the tmpfs for the cgroup hierarchies"))?;
    // From here on the target is a tmpfs that only this child can reach.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(Error::io("read /proc/self/mountinfo"))?;
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(Error::io("read /proc/self/cgroup"))?;
    for h in hierarchies(&mountinfo, &own) {
        let Some(name) = h.mount_point.file_name() else {
            continue;
        };
        let sub = target.join(name);
        std::fs::create_dir_all(&sub).map_err(Error::io(format!("create {}", sub.display())))?;
        if cgroupns {
            mount(
                Some("cgroup"),
                &sub,
                Some("cgroup"),
                m.flags,
                Some(h.controllers.as_str()),
            )
            .map_err(Error::sys(format!("mount cgroup {}", h.controllers)))?;
        } else {
            let source = h.mount_point.join(h.own_path.trim_start_matches('/'));
            let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
            mount(Some(&source), &sub, NONE, bind, NONE)
                .map_err(Error::sys(format!("bind {}", source.display())))?;
            let extra = m.flags - (bind | MsFlags::MS_REMOUNT);
            mount(
                NONE,
                &sub,
                NONE,
                extra | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
                NONE,
            )
            .map_err(Error::sys(format!("remount {}", sub.display())))?;
        }
        let name = name.to_string_lossy();
        if name.contains(',') {
            for part in name.split(',') {
                let _ = symlink(name.as_ref(), target.join(part));
            }
        }
    }
    if m.flags.contains(MsFlags::MS_RDONLY) {
        let flags = m.flags | MsFlags::MS_REMOUNT;
        mount(NONE, target, NONE, flags, NONE)
            .map_err(Error::sys("make the cgroup tmpfs read-only"))?;
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
struct Hierarchy {
    mount_point: PathBuf,
    /// The controllers (or `name=…`) of the hierarchy, comma-joined.
    controllers: String,
    /// This process's cgroup in it.
    own_path: String,
}

/// The v1 hierarchies mounted on the host that this process is in.
fn hierarchies(mountinfo: &str, own: &str) -> Vec<Hierarchy> {
    let mut found = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut right = right.split(' ');
        if right.next() != Some("cgroup") {
            continue;
        }
        let options: Vec<&str> = right.nth(1).unwrap_or("").split(',').collect();
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        let matched = own.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let wanted: Vec<&str> = controllers.split(',').collect();
            (!controllers.is_empty() && wanted.iter().all(|c| options.contains(c)))
                .then(|| (controllers.to_string(), path.to_string()))
        });
        if let Some((controllers, own_path)) = matched {
            found.push(Hierarchy {
                mount_point: PathBuf::from(mount_point),
                controllers,
                own_path,
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_mounts_with_own_cgroups() {
        let mountinfo = "\
30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
31 25 0:27 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
32 25 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
40 1 8:1 / / rw - ext4 /dev/sda1 rw
";
        let own = "3:memory:/e2e/c1\n2:cpu,cpuacct:/e2e/c1\n1:name=systemd:/init.scope\n0::/\n";
        let h = hierarchies(mountinfo, own);
        assert_eq!(h.len(), 3);
        assert_eq!(h[0].controllers, "cpu,cpuacct");
        assert_eq!(h[0].own_path, "/e2e/c1");
        assert_eq!(h[1].controllers, "name=systemd");
        assert_eq!(h[2].mount_point, PathBuf::from("/sys/fs/cgroup/memory"));
    }
}
