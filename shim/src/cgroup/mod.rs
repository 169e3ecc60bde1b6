//! The container's cgroup: created from `linux.cgroupsPath` in every
//! mounted hierarchy (cgroup v1), or in the unified one (v2), and removed
//! when the task is deleted. Its limits (`limits`, `devices`), statistics
//! (`stats`), freezer (`freeze`) and OOM notifications (`oom`) live beside.

mod devices;
mod freeze;
mod kill;
mod limits;
pub mod oom;
mod stats;

pub use limits::{BelowUsage, check_update};

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, bail};

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// The directories of one container's cgroup, one per hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    pub dirs: Vec<PathBuf>,
    /// The controllers of each directory's hierarchy (v1; empty in v2).
    controllers: Vec<Vec<String>>,
    /// Made in v1 hierarchies (else in the unified v2 one).
    v1: bool,
}

/// The hierarchies the shim makes cgroups in.
#[derive(Debug, PartialEq, Eq)]
struct Hierarchies {
    roots: Vec<PathBuf>,
    controllers: Vec<Vec<String>>,
    v1: bool,
}

/// The cgroup for `path` (not created yet): an absolute path from each
/// hierarchy's root, a systemd-form one (`slice:prefix:name`) where
/// systemd runs as its unit's place, any other relative one (a
/// systemd-form path too on a host without systemd, as critest's pods on
/// containerd 1.6 and 1.7 get) below the cgroup of the process that
/// creates it, as runc's cgroupfs driver takes it.
pub fn locate(path: &str) -> anyhow::Result<Cgroup> {
    if path.split('/').any(|part| part == "..") {
        bail!("linux.cgroupsPath {path} must not contain '..'");
    }
    let systemd = is_systemd_form(path) && Path::new("/run/systemd/system").exists();
    if !path.starts_with('/') && !systemd {
        return below_own(path, "linux.cgroupsPath");
    }
    let relative = relative_path(path)?;
    let hierarchies = mounted_hierarchies()?;
    let dirs = hierarchies
        .roots
        .iter()
        .map(|root| root.join(&relative))
        .collect();
    Ok(Cgroup {
        dirs,
        controllers: hierarchies.controllers.clone(),
        v1: hierarchies.v1,
    })
}

/// The cgroup of the container `id` of `spec`: its `linux.cgroupsPath`
/// or, when the spec names none, the one runc makes then, `id` under the
/// cgroup of the process that creates it in each hierarchy, so that the
/// spec's limits are never silently left unapplied. The `delete` action
/// finds the same one: containerd starts it and the shim alike.
pub fn of_spec(spec: &oci_spec::runtime::Spec, id: &str) -> anyhow::Result<Cgroup> {
    if let Some(path) = executor::spec::cgroups_path(spec) {
        return locate(&path);
    }
    if id.is_empty() || id.contains('/') || id == "." || id == ".." {
        bail!("task id {id:?} cannot name a cgroup (the spec has no linux.cgroupsPath)");
    }
    below_own(id, "the default linux.cgroupsPath")
}

/// `relative` below this process's cgroup in each hierarchy.
fn below_own(relative: &str, what: &str) -> anyhow::Result<Cgroup> {
    let own = std::fs::read_to_string("/proc/self/cgroup").context("read /proc/self/cgroup")?;
    let hierarchies = mounted_hierarchies()?;
    let mut dirs = Vec::with_capacity(hierarchies.roots.len());
    for (root, controllers) in hierarchies.roots.iter().zip(&hierarchies.controllers) {
        let path = own_path(&own, controllers).with_context(|| {
            format!(
                "find this process's cgroup in {} for {what}",
                root.display()
            )
        })?;
        dirs.push(root.join(path.trim_start_matches('/')).join(relative));
    }
    Ok(Cgroup {
        dirs,
        controllers: hierarchies.controllers.clone(),
        v1: hierarchies.v1,
    })
}

/// A process's path in the hierarchy of `controllers` (v1; none or the
/// hybrid marker "unified" for the v2 hierarchy), from the text of its
/// `/proc/<pid>/cgroup`.
fn own_path<'a>(text: &'a str, controllers: &[String]) -> Option<&'a str> {
    let unified = controllers.iter().all(|c| c == "unified");
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, names, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = match unified {
            true => names.is_empty(),
            false => {
                !names.is_empty() && names.split(',').all(|n| controllers.iter().any(|c| c == n))
            }
        };
        matches.then_some(path)
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
    /// A cgroup at `dir` of a unified (v2) hierarchy, or of a v1 hierarchy
    /// per controller, without looking at the host's mounts: for tests on
    /// a made-up tree.
    #[cfg(test)]
    pub fn at(dirs: Vec<(PathBuf, Vec<&str>)>, v1: bool) -> Cgroup {
        let controllers = dirs
            .iter()
            .map(|(_, c)| c.iter().map(|s| s.to_string()).collect())
            .collect();
        Cgroup {
            dirs: dirs.into_iter().map(|(d, _)| d).collect(),
            controllers,
            v1,
        }
    }

    pub fn v2(&self) -> bool {
        !self.v1
    }

    /// The directory that holds `controller`'s files: in v2 the one
    /// directory, in v1 the one in that controller's hierarchy.
    pub fn dir(&self, controller: &str) -> Option<&Path> {
        if !self.v1 {
            return self.dirs.first().map(PathBuf::as_path);
        }
        self.dirs
            .iter()
            .zip(&self.controllers)
            .find(|(_, names)| names.iter().any(|n| n == controller))
            .map(|(dir, _)| dir.as_path())
    }

    /// The contents of a controller's file, trimmed.
    pub fn read(&self, controller: &str, file: &str) -> anyhow::Result<String> {
        let dir = self
            .dir(controller)
            .with_context(|| format!("no {controller} cgroup hierarchy is mounted"))?;
        let path = dir.join(file);
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        Ok(text.trim().to_string())
    }

    /// Writes a controller's file.
    pub fn write(&self, controller: &str, file: &str, value: &str) -> anyhow::Result<()> {
        let dir = self
            .dir(controller)
            .with_context(|| format!("no {controller} cgroup hierarchy is mounted"))?;
        let path = dir.join(file);
        log::debug!("cgroup: {} <- {value}", path.display());
        std::fs::write(&path, value)
            .with_context(|| format!("write {value:?} to {}", path.display()))
    }

    pub fn create(&self) -> anyhow::Result<()> {
        for dir in &self.dirs {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("create cgroup {}", dir.display()))?;
            // In v2 an empty cpuset.cpus means "as the parent": nothing to do.
            if self.v1 {
                inherit_cpuset(dir)?;
            } else {
                enable_controllers(dir);
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

/// Enables, on every level above `dir` down from the hierarchy's root,
/// the controllers that level has, so that `dir` gets their files
/// (memory.max, cpu.max, pids.max…). As runc, a controller the kernel
/// refuses to enable is left out rather than failing: the write of its
/// limit then says which file is missing.
fn enable_controllers(dir: &Path) {
    let mut levels: Vec<&Path> = dir
        .ancestors()
        .skip(1)
        .filter(|level| level.join("cgroup.controllers").exists())
        .collect();
    levels.reverse();
    for level in levels {
        let available =
            std::fs::read_to_string(level.join("cgroup.controllers")).unwrap_or_default();
        let enabled =
            std::fs::read_to_string(level.join("cgroup.subtree_control")).unwrap_or_default();
        let file = level.join("cgroup.subtree_control");
        for controller in available.split_whitespace() {
            if enabled.split_whitespace().any(|e| e == controller) {
                continue;
            }
            if let Err(e) = std::fs::write(&file, format!("+{controller}")) {
                log::debug!("enable {controller} in {}: {e}", file.display());
            }
        }
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
    let mut v1_controllers = Vec::new();
    let mut v2 = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        let mut right = right.split(' ');
        match right.next() {
            Some("cgroup") => {
                v1.push(PathBuf::from(mount_point));
                // The super options name the controllers: "rw,cpu,cpuacct".
                let options = right.nth(1).unwrap_or("");
                v1_controllers.push(options.split(',').map(str::to_string).collect());
            }
            Some("cgroup2") => v2.push(PathBuf::from(mount_point)),
            _ => {}
        }
    }
    match v1.is_empty() {
        true => Hierarchies {
            controllers: vec![Vec::new(); v2.len()],
            roots: v2,
            v1: false,
        },
        // A hybrid host also has the unified hierarchy (no controllers):
        // runc puts the container there too, so the kernel and systemd
        // see it as one group.
        false => {
            let unified = v2.len();
            v1.extend(v2);
            v1_controllers.extend(std::iter::repeat_n(vec!["unified".to_string()], unified));
            Hierarchies {
                roots: v1,
                controllers: v1_controllers,
                v1: true,
            }
        }
    }
}

/// The cgroup path relative to a hierarchy's root. A systemd-style path
/// (`slice:prefix:name`) is expanded the way systemd lays out its units.
fn relative_path(path: &str) -> anyhow::Result<PathBuf> {
    if is_systemd_form(path) {
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

fn is_systemd_form(path: &str) -> bool {
    !path.starts_with('/') && path.matches(':').count() == 2
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
        let hybrid = hierarchies(HYBRID);
        assert_eq!(
            hybrid.roots,
            [
                PathBuf::from("/sys/fs/cgroup/memory"),
                PathBuf::from("/sys/fs/cgroup/pids"),
                PathBuf::from("/sys/fs/cgroup/unified")
            ]
        );
        assert_eq!(hybrid.controllers[2], ["unified"]);
        assert!(hybrid.v1);
        assert_eq!(hybrid.controllers[0], ["rw", "memory"]);
        let unified = hierarchies(UNIFIED);
        assert_eq!(unified.roots, [PathBuf::from("/sys/fs/cgroup")]);
        assert!(!unified.v1);
    }

    #[test]
    fn finds_the_directory_of_a_controller() {
        let cg = Cgroup::at(
            vec![
                (PathBuf::from("/m/c1"), vec!["rw", "memory"]),
                (PathBuf::from("/cc/c1"), vec!["rw", "cpu", "cpuacct"]),
            ],
            true,
        );
        assert_eq!(cg.dir("cpuacct"), Some(Path::new("/cc/c1")));
        assert_eq!(cg.dir("memory"), Some(Path::new("/m/c1")));
        assert_eq!(cg.dir("pids"), None);
        let v2 = Cgroup::at(vec![(PathBuf::from("/u/c1"), vec![])], false);
        assert_eq!(v2.dir("pids"), Some(Path::new("/u/c1")));
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
        let unified = Cgroup::at(vec![(ns.join("c1"), vec![])], false);
        unified.create().unwrap();
        assert_eq!(std::fs::read_to_string(ns.join("cpuset.cpus")).unwrap(), "");

        std::fs::write(root.path().join("cpuset.cpus"), "0-1\n").unwrap();
        std::fs::write(root.path().join("cpuset.mems"), "0\n").unwrap();
        let dir = ns.join("c2");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("cpuset.cpus"), "").unwrap();
        std::fs::write(dir.join("cpuset.mems"), "").unwrap();
        let v1 = Cgroup::at(vec![(dir.clone(), vec!["cpuset"])], true);
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
    fn v2_enables_controllers_above_the_container() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::write(r.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        std::fs::write(r.join("cgroup.subtree_control"), "memory\n").unwrap();
        let cg = Cgroup::at(vec![(r.join("default/c1"), vec![])], false);
        cg.create().unwrap();
        // A plain file keeps the last write; the kernel would keep all.
        let written = std::fs::read_to_string(r.join("cgroup.subtree_control")).unwrap();
        assert_eq!(written, "+pids");
        assert!(r.join("default/c1").is_dir());
    }

    #[test]
    fn own_paths_per_hierarchy() {
        let text = "9:name=systemd:/\n4:memory:/api/x\n2:cpu,cpuacct:/c\n0::/u\n";
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(own_path(text, &names(&["rw", "memory"])), Some("/api/x"));
        assert_eq!(
            own_path(text, &names(&["rw", "cpuacct", "cpu"])),
            Some("/c")
        );
        assert_eq!(
            own_path(text, &names(&["rw", "xattr", "name=systemd"])),
            Some("/")
        );
        assert_eq!(own_path(text, &names(&["unified"])), Some("/u"));
        assert_eq!(own_path(text, &[]), Some("/u"));
        assert_eq!(own_path(text, &names(&["rw", "pids"])), None);
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
        assert!(locate("/a/../../etc").is_err());
        assert!(locate("a/../../etc").is_err());
        assert!(relative_path("bad:x:y").is_err());
    }
}
