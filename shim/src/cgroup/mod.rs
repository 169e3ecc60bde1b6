//! The container's cgroup: created from `linux.cgroupsPath` in every
//! mounted hierarchy (cgroup v1), or in the unified one (v2), and removed
//! when the task is deleted.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, bail};

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// The directories of one container's cgroup, one per hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    pub dirs: Vec<PathBuf>,
    /// Made in v1 hierarchies (else in the unified v2 one).
    v1: bool,
}

/// The hierarchies the shim makes cgroups in.
#[derive(Debug, PartialEq, Eq)]
struct Hierarchies {
    roots: Vec<PathBuf>,
    v1: bool,
}

/// The cgroup for `path` (not created yet).
pub fn locate(path: &str) -> anyhow::Result<Cgroup> {
    let relative = relative_path(path)?;
    let hierarchies = mounted_hierarchies()?;
    let dirs = hierarchies
        .roots
        .iter()
        .map(|root| root.join(&relative))
        .collect();
    Ok(Cgroup {
        dirs,
        v1: hierarchies.v1,
    })
}

/// The host's cgroup hierarchies, read once per shim process rather than
/// at every Create: they are mounted at boot and do not move.
fn mounted_hierarchies() -> anyhow::Result<&'static Hierarchies> {
    static HIERARCHIES: OnceLock<Hierarchies> = OnceLock::new();
    if let Some(found) = HIERARCHIES.get() {
        return Ok(found);
    }
    let mountinfo = std::fs::read_to_string(MOUNTINFO).context("read /proc/self/mountinfo")?;
    Ok(HIERARCHIES.get_or_init(|| hierarchies(&mountinfo)))
}

impl Cgroup {
    pub fn create(&self) -> anyhow::Result<()> {
        for dir in &self.dirs {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("create cgroup {}", dir.display()))?;
            // In v2 an empty cpuset.cpus means "as the parent": nothing to do.
            if self.v1 {
                inherit_cpuset(dir)?;
            }
        }
        Ok(())
    }

    pub fn add(&self, pid: i32) -> anyhow::Result<()> {
        for dir in &self.dirs {
            let procs = dir.join("cgroup.procs");
            std::fs::write(&procs, pid.to_string())
                .with_context(|| format!("move pid {pid} into {}", procs.display()))?;
        }
        Ok(())
    }

    /// Removes the directories. The kernel may still count a process that
    /// has just been reaped, so an EBUSY is retried for a little while.
    pub fn remove(&self) -> anyhow::Result<()> {
        for dir in &self.dirs {
            let mut tries = 0;
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 100 => {
                        tries += 1;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => {
                        return Err(e).with_context(|| format!("remove cgroup {}", dir.display()));
                    }
                }
            }
        }
        Ok(())
    }
}

/// A v1 cpuset cgroup starts with no CPUs and no memory nodes, and the
/// kernel refuses to move a process into it; fill each empty level from
/// its parent, top down, as runc does.
fn inherit_cpuset(dir: &Path) -> anyhow::Result<()> {
    let mut empty = Vec::new();
    let mut current = Some(dir);
    while let Some(level) = current {
        match std::fs::read_to_string(level.join("cpuset.cpus")) {
            Ok(cpus) if cpus.trim().is_empty() => empty.push(level),
            _ => break,
        }
        current = level.parent();
    }
    for level in empty.into_iter().rev() {
        let Some(parent) = level.parent() else {
            continue;
        };
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let value = std::fs::read_to_string(parent.join(file))
                .with_context(|| format!("read {}", parent.join(file).display()))?;
            std::fs::write(level.join(file), value.trim())
                .with_context(|| format!("write {}", level.join(file).display()))?;
        }
    }
    Ok(())
}

/// The mount points of the hierarchies to use: the unified one alone on a
/// pure v2 host, else every v1 hierarchy (named ones included, as runc).
fn hierarchies(mountinfo: &str) -> Hierarchies {
    let mut v1 = Vec::new();
    let mut v2 = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        match right.split(' ').next() {
            Some("cgroup") => v1.push(PathBuf::from(mount_point)),
            Some("cgroup2") => v2.push(PathBuf::from(mount_point)),
            _ => {}
        }
    }
    match v1.is_empty() {
        true => Hierarchies {
            roots: v2,
            v1: false,
        },
        false => Hierarchies {
            roots: v1,
            v1: true,
        },
    }
}

/// The cgroup path relative to a hierarchy's root. A systemd-style path
/// (`slice:prefix:name`) is expanded the way systemd lays out its units.
fn relative_path(path: &str) -> anyhow::Result<PathBuf> {
    if path.split('/').any(|part| part == "..") {
        bail!("linux.cgroupsPath {path} must not contain '..'");
    }
    if !path.starts_with('/') && path.matches(':').count() == 2 {
        let mut parts = path.splitn(3, ':');
        let (slice, prefix, name) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let slice = if slice.is_empty() {
            "system.slice"
        } else {
            slice
        };
        return Ok(expand_slice(slice)?.join(format!("{prefix}-{name}.scope")));
    }
    Ok(PathBuf::from(path.trim_start_matches('/')))
}

/// `a-b-c.slice` lives at `a.slice/a-b.slice/a-b-c.slice`.
fn expand_slice(slice: &str) -> anyhow::Result<PathBuf> {
    let Some(stem) = slice.strip_suffix(".slice") else {
        bail!("linux.cgroupsPath: systemd slice {slice} must end in .slice");
    };
    let mut path = PathBuf::new();
    let mut prefix = String::new();
    for part in stem.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push(format!("{prefix}.slice"));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 1 0:23 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
27 25 0:25 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
28 25 0:26 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
";
    const UNIFIED: &str = "35 1 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";

    #[test]
    fn picks_v1_hierarchies_or_the_unified_one() {
        assert_eq!(
            hierarchies(HYBRID),
            Hierarchies {
                roots: vec![
                    PathBuf::from("/sys/fs/cgroup/memory"),
                    PathBuf::from("/sys/fs/cgroup/pids")
                ],
                v1: true
            }
        );
        assert_eq!(
            hierarchies(UNIFIED),
            Hierarchies {
                roots: vec![PathBuf::from("/sys/fs/cgroup")],
                v1: false
            }
        );
    }

    /// In v2 an empty cpuset.cpus is normal (the parent's set applies) and
    /// the root has none at all: nothing is copied and nothing fails. In
    /// v1 the empty levels are filled from the nearest non-empty parent.
    #[test]
    fn fills_empty_cpusets_in_v1_only() {
        let root = tempfile::tempdir().unwrap();
        let ns = root.path().join("default");
        std::fs::create_dir(&ns).unwrap();
        std::fs::write(ns.join("cpuset.cpus"), "").unwrap();
        std::fs::write(ns.join("cpuset.mems"), "").unwrap();
        let unified = Cgroup {
            dirs: vec![ns.join("c1")],
            v1: false,
        };
        unified.create().unwrap();
        assert_eq!(std::fs::read_to_string(ns.join("cpuset.cpus")).unwrap(), "");

        std::fs::write(root.path().join("cpuset.cpus"), "0-1\n").unwrap();
        std::fs::write(root.path().join("cpuset.mems"), "0\n").unwrap();
        let dir = ns.join("c2");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("cpuset.cpus"), "").unwrap();
        std::fs::write(dir.join("cpuset.mems"), "").unwrap();
        let v1 = Cgroup {
            dirs: vec![dir.clone()],
            v1: true,
        };
        v1.create().unwrap();
        for level in [&ns, &dir] {
            assert_eq!(
                std::fs::read_to_string(level.join("cpuset.cpus")).unwrap(),
                "0-1"
            );
            assert_eq!(
                std::fs::read_to_string(level.join("cpuset.mems")).unwrap(),
                "0"
            );
        }
    }

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative_path("/default/c1").unwrap(),
            PathBuf::from("default/c1")
        );
        assert_eq!(
            relative_path("kubepods-besteffort-pod1.slice:cri-containerd:abc").unwrap(),
            PathBuf::from(
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-abc.scope"
            )
        );
        assert_eq!(
            relative_path(":cri:abc").unwrap(),
            PathBuf::from("system.slice/cri-abc.scope")
        );
        assert!(relative_path("/a/../../etc").is_err());
        assert!(relative_path("bad:x:y").is_err());
    }
}
