//! /dev as runc builds it when it is not bound from the host: the default
//! nodes (null, zero, full, random, urandom, tty), the spec's
//! `linux.devices`, /dev/ptmx pointing into the devpts instance, and the
//! /dev/fd, stdin, stdout, stderr and core links.

use std::os::unix::fs::symlink;
use std::path::Path;

use nix::fcntl::AtFlags;
use nix::sys::stat::{Mode, SFlag, makedev, mknodat, umask};
use nix::unistd::{Gid, Uid, fchownat};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

use crate::error::{Error, Result};

/// (name, major, minor) of the nodes every container gets, mode 0666,
/// owned by root.
const DEFAULT_NODES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("random", 1, 8),
    ("full", 1, 7),
    ("tty", 5, 0),
    ("zero", 1, 5),
    ("urandom", 1, 9),
];

/// One node to make: path inside the rootfs, kind, numbers, mode, owner.
struct Node<'a> {
    path: &'a Path,
    kind: SFlag,
    major: u64,
    minor: u64,
    mode: u32,
    uid: u32,
    gid: u32,
}

pub fn populate(rootfs: &Path, devices: &[LinuxDevice]) -> Result<()> {
    let dev = rootfs.join("dev");
    // Modes are the spec's, not reduced by the shim's umask.
    let old = umask(Mode::empty());
    let made = make_nodes(rootfs, devices);
    umask(old);
    made?;
    // The devpts instance has its own ptmx; the node itself must be the
    // one in /dev/pts for new terminals to land there.
    let ptmx = dev.join("ptmx");
    let _ = std::fs::remove_file(&ptmx);
    symlink("pts/ptmx", &ptmx).map_err(Error::io("link /dev/ptmx"))?;
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "core"));
    }
    for (target, name) in links {
        match symlink(target, dev.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(Error::io(format!("link /dev/{name}"))(e));
            }
            _ => {}
        }
    }
    Ok(())
}

fn make_nodes(rootfs: &Path, devices: &[LinuxDevice]) -> Result<()> {
    let defaults = DEFAULT_NODES.iter().map(|(name, major, minor)| {
        (
            Path::new("/dev").join(name),
            SFlag::S_IFCHR,
            *major,
            *minor,
            0o666,
            0,
            0,
        )
    });
    // A spec device with the path of a default one replaces it, as in runc.
    let defaults: Vec<_> = defaults
        .filter(|d| !devices.iter().any(|s| s.path() == &d.0))
        .collect();
    let mut nodes = Vec::new();
    for (path, kind, major, minor, mode, uid, gid) in &defaults {
        nodes.push(Node {
            path,
            kind: *kind,
            major: *major,
            minor: *minor,
            mode: *mode,
            uid: *uid,
            gid: *gid,
        });
    }
    for (i, d) in devices.iter().enumerate() {
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            LinuxDeviceType::A => {
                return Err(Error::InvalidSpec(format!(
                    "linux.devices[{i}] ({}): type a is not a node type",
                    d.path().display()
                )));
            }
        };
        if !d.path().is_absolute() || !d.path().starts_with("/dev") {
            return Err(Error::InvalidSpec(format!(
                "linux.devices[{i}]: path {} is not under /dev",
                d.path().display()
            )));
        }
        nodes.push(Node {
            path: d.path(),
            kind,
            major: d.major() as u64,
            minor: d.minor() as u64,
            mode: d.file_mode().unwrap_or(0o666) & 0o7777,
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        });
    }
    for node in nodes {
        make(rootfs, &node)?;
    }
    Ok(())
}

/// Makes one node, in a parent directory held open and checked to be in
/// the rootfs, so that a symlink swapped in meanwhile cannot redirect it.
fn make(rootfs: &Path, node: &Node) -> Result<()> {
    let target = super::paths::secure_join(rootfs, node.path)?;
    let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
        return Err(Error::InvalidSpec(format!(
            "linux.devices: {} names no file",
            node.path.display()
        )));
    };
    std::fs::create_dir_all(parent).map_err(Error::io(format!("create {}", parent.display())))?;
    let dir = super::paths::Inside::open(rootfs, parent)?;
    let mode = Mode::from_bits_truncate(node.mode);
    let dev = makedev(node.major, node.minor);
    match mknodat(dir.fd(), name, node.kind, mode, dev) {
        // An existing node is kept as it is, as runc keeps it.
        Err(nix::errno::Errno::EEXIST) => return Ok(()),
        other => other.map_err(Error::sys(format!("mknod {}", node.path.display())))?,
    }
    fchownat(
        dir.fd(),
        name,
        Some(Uid::from_raw(node.uid)),
        Some(Gid::from_raw(node.gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(Error::sys(format!("chown {}", node.path.display())))
}
