//! Paths inside the container: resolving a mount destination without
//! leaving the rootfs through a symlink, and the spec's maskedPaths and
//! readonlyPaths, applied as runc applies them.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{OFlag, open};
use nix::mount::{MsFlags, mount};
use nix::sys::stat::Mode;
use nix::sys::statvfs::{FsFlags, statvfs};

use crate::error::{Error, Result};

/// How many symlinks one path may go through, as the kernel allows.
const MAX_LINKS: usize = 40;

/// `path` inside `root`, with every symlink on the way resolved as if
/// `root` were `/`: an image cannot point a mount at the host with a link.
pub fn secure_join(root: &Path, path: &Path) -> Result<PathBuf> {
    let mut resolved = PathBuf::new();
    let mut pending: Vec<PathBuf> = vec![path.to_path_buf()];
    let mut links = 0;
    while let Some(next) = pending.pop() {
        let mut components: Vec<Component> = next.components().collect();
        components.reverse();
        while let Some(c) = components.pop() {
            match c {
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    resolved.pop();
                }
                Component::Normal(name) => {
                    let candidate = resolved.join(name);
                    let full = root.join(&candidate);
                    match std::fs::symlink_metadata(&full) {
                        Ok(meta) if meta.file_type().is_symlink() => {
                            links += 1;
                            if links > MAX_LINKS {
                                return Err(Error::InvalidSpec(format!(
                                    "{}: too many symlinks inside the rootfs",
                                    path.display()
                                )));
                            }
                            let target = std::fs::read_link(&full)
                                .map_err(Error::io(format!("read link {}", full.display())))?;
                            if target.is_absolute() {
                                resolved = PathBuf::new();
                            }
                            let rest: PathBuf = components.iter().rev().collect();
                            components.clear();
                            pending.push(rest);
                            pending.push(target);
                            break;
                        }
                        _ => resolved = candidate,
                    }
                }
            }
        }
    }
    Ok(root.join(resolved))
}

/// A path inside the rootfs held open (O_PATH), so that what is done to
/// it happens to the very inode that was checked: a container of the same
/// pod that swaps a directory of a shared volume for a symlink between the
/// check and the mount cannot send the mount to the host (the attack of
/// CVE-2021-30465 on runc, closed the same way).
pub struct Inside {
    fd: OwnedFd,
    proc_path: String,
}

impl Inside {
    /// Opens `path` (already resolved by [`secure_join`]) and checks that
    /// the opened inode is still below `rootfs`.
    pub fn open(rootfs: &Path, path: &Path) -> Result<Inside> {
        let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = open(path, flags, Mode::empty())
            .map_err(Error::sys(format!("open {}", path.display())))?;
        let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let real = std::fs::read_link(&proc_path).map_err(Error::io(format!(
            "read {proc_path} for {}",
            path.display()
        )))?;
        // The path was resolved without symlinks: anything else read back
        // means a component was swapped after the resolution.
        if !real.starts_with(rootfs) || real != path {
            return Err(Error::InvalidSpec(format!(
                "{} left the container's rootfs while it was being set up (it is now {})",
                path.display(),
                real.display()
            )));
        }
        Ok(Inside { fd, proc_path })
    }

    /// The opened inode, for `*at` calls relative to it.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// The path that reaches the opened inode (`/proc/self/fd/N`).
    pub fn path(&self) -> &str {
        &self.proc_path
    }
}

/// Files under /proc that a bind mount may cover (lxcfs and the like
/// provide container-aware versions of them), as runc allows.
const PROC_FILES_ALLOWED: [&str; 10] = [
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
];

/// Refuses a mount whose resolved destination is in /proc, other than
/// procfs itself at /proc and the allowed files, as runc's checkProcMount
/// does: a volume over /proc would let the image fake the files through
/// which the LSM labels and sysctls are set.
pub fn check_proc_mount(inside: &Path, fstype: &str) -> Result<()> {
    let proc = Path::new("/proc");
    if !inside.starts_with(proc) {
        return Ok(());
    }
    if inside == proc && fstype == "proc" {
        return Ok(());
    }
    if PROC_FILES_ALLOWED.iter().any(|f| inside == Path::new(f)) {
        return Ok(());
    }
    Err(Error::InvalidSpec(format!(
        "cannot mount on {}: /proc belongs to procfs",
        inside.display()
    )))
}

/// Writes a file of the container's /proc after checking that it really
/// is on procfs, not on something the image or a volume put there.
pub fn write_proc(path: &str, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
    let stat = nix::sys::statfs::fstatfs(&file).map_err(std::io::Error::from)?;
    if stat.filesystem_type() != nix::sys::statfs::PROC_SUPER_MAGIC {
        return Err(std::io::Error::other(format!("{path} is not on procfs")));
    }
    file.write_all(value.as_bytes())
}

/// The nosuid/nodev/noexec flags a mount has, which a read-only remount
/// of it must keep (the kernel refuses to drop locked ones).
pub fn locked_flags(path: &Path) -> Result<MsFlags> {
    let stat = statvfs(path).map_err(Error::sys(format!("statfs {}", path.display())))?;
    let mut flags = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
    ] {
        if stat.flags().contains(fs) {
            flags |= ms;
        }
    }
    Ok(flags)
}

/// Hides each masked path: /dev/null over a file, an empty read-only
/// tmpfs (with the mount label, if any) over a directory. A path that
/// does not exist is skipped.
pub fn mask(paths: &[PathBuf], label: Option<&str>) -> Result<()> {
    let context = label.map(|l| format!("context=\"{l}\""));
    for path in paths {
        let Ok(meta) = std::fs::metadata(path) else {
            continue;
        };
        let done = match meta.is_dir() {
            true => mount(
                Some("tmpfs"),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                context.as_deref(),
            ),
            false => mount(
                Some("/dev/null"),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            ),
        };
        done.map_err(Error::sys(format!(
            "linux.maskedPaths: mask {}",
            path.display()
        )))?;
    }
    Ok(())
}

/// Makes each path read-only with a bind mount onto itself. A path that
/// does not exist is skipped.
pub fn make_readonly(paths: &[PathBuf]) -> Result<()> {
    for path in paths {
        if std::fs::symlink_metadata(path).is_err() {
            continue;
        }
        let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
        mount(Some(path), path, None::<&str>, flags, None::<&str>).map_err(Error::sys(format!(
            "linux.readonlyPaths: bind {}",
            path.display()
        )))?;
        remount_readonly(path, MsFlags::empty())?;
    }
    Ok(())
}

/// Remounts a mount point read-only, keeping its nosuid/nodev/noexec.
pub fn remount_readonly(path: &Path, extra: MsFlags) -> Result<()> {
    const NONE: Option<&str> = None;
    let kept = locked_flags(path)?;
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | kept | extra;
    mount(NONE, path, NONE, flags, NONE)
        .map_err(Error::sys(format!("make {} read-only", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn an_opened_path_outside_the_root_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path().canonicalize().unwrap();
        std::fs::create_dir(r.join("in")).unwrap();
        let inside = Inside::open(&r, &r.join("in")).unwrap();
        assert!(inside.path().starts_with("/proc/self/fd/"));
        // What a swapped symlink would make of a resolved path.
        let err = Inside::open(&r.join("in"), &r).err().unwrap().to_string();
        assert!(err.contains("left the container's rootfs"), "{err}");
        std::os::unix::fs::symlink("in", r.join("link")).unwrap();
        let err = Inside::open(&r, &r.join("link/."))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("left the container's rootfs"), "{err}");
    }

    #[test]
    fn proc_takes_only_procfs_and_the_allowed_files() {
        assert!(check_proc_mount(Path::new("/proc"), "proc").is_ok());
        assert!(check_proc_mount(Path::new("/proc/cpuinfo"), "bind").is_ok());
        assert!(check_proc_mount(Path::new("/data"), "bind").is_ok());
        assert!(check_proc_mount(Path::new("/proc"), "tmpfs").is_err());
        let err = check_proc_mount(Path::new("/proc/self/attr"), "bind").unwrap_err();
        assert!(err.to_string().contains("/proc belongs to procfs"), "{err}");
        assert!(write_proc("/tmp/not-proc-at-all", "x").is_err());
    }

    #[test]
    fn links_stay_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("real/dir")).unwrap();
        symlink("/real", r.join("abs")).unwrap();
        symlink("../../../../etc", r.join("up")).unwrap();
        symlink("real/dir", r.join("rel")).unwrap();
        let join = |p: &str| secure_join(r, Path::new(p)).unwrap();
        assert_eq!(join("/abs/dir/x"), r.join("real/dir/x"));
        assert_eq!(join("/up/passwd"), r.join("etc/passwd"));
        assert_eq!(join("/rel/../y"), r.join("real/y"));
        assert_eq!(join("/../../z"), r.join("z"));
        assert_eq!(join("/new/path"), r.join("new/path"));
        symlink("loop", r.join("loop")).unwrap();
        assert!(secure_join(r, Path::new("/loop/x")).is_err());
    }
}
